"""The one exception type for problems the user can fix."""


class InputError(ValueError):
    """Bad user input: a data folder, a study file, a URL or an option.

    The message names the bad value and says how to fix it. The CLI prints it
    on one line and exits with code 2; library callers catch it as ValueError.
    """
