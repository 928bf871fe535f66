"""Reading a TOML table with checks: the one validator behind study files and best.toml files.

Every error is an ``InputError`` of one line naming the file, the dotted key, what
was wrong with the value it got, and (with ``fix``) what to do about it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from spheroid_hpo.errors import InputError

__all__ = ["REQUIRED", "TomlTable", "toml_value"]

REQUIRED = object()  # default for a key that must be present


class TomlTable:
    """A table of a parsed TOML file being read: knows its place in the file and rejects unknown keys.

    ``fix`` ends every message (``"; fix it or ..."``), for files a tool wrote.
    """

    def __init__(self, raw: Any, where: str, source, *, fix: str = ""):
        self.where, self.source, self.fix = where, source, fix
        if not isinstance(raw, dict):
            raise InputError(f"{source}: [{where or 'top level'}] must be a table, but got {raw!r}{fix}")
        self.raw = raw

    def key(self, name: str) -> str:
        """The dotted key of ``name`` in this table (``data.demo.size``)."""
        return ".".join(part for part in (self.where, name) if part)

    def error(self, name: str, message: str) -> InputError:
        """An InputError about key ``name`` (the table itself when empty)."""
        return InputError(f"{self.source}: {self.key(name) or 'top level'} {message}{self.fix}")

    def check_keys(self, allowed: tuple[str, ...], *, required: tuple[str, ...] = ()) -> None:
        """Refuse keys outside ``allowed + required``, and missing ``required`` ones."""
        valid = (*required, *(key for key in allowed if key not in required))
        for key in self.raw:
            if key not in valid:
                raise self.error(key, f"is not a known key (valid keys in [{self.where or 'top level'}]: "
                                      f"{', '.join(valid)})")
        for key in required:
            if key not in self.raw:
                raise self.error(key, "is missing")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = REQUIRED) -> Any:
        """The value of ``name``, of type ``kind`` (an int is accepted as a float, a bool never as a number)."""
        if name not in self.raw:
            if default is REQUIRED:
                raise self.error(name, "is missing")
            return default
        value = self.raw[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.error(name, f"must be {names}, but got {value!r}")
        return value

    def positive(self, name: str, kind: type, default: Any = REQUIRED, *, minimum: float = 1,
                 maximum: float = math.inf) -> Any:
        """A number from ``minimum`` to ``maximum`` (None passes when it is the default)."""
        value = self.get(name, kind, default)
        if value is not None and not (math.isfinite(value) and minimum <= value <= maximum):
            limit = f"at least {minimum}" if maximum == math.inf else f"from {minimum} to {maximum}"
            raise self.error(name, f"must be {limit}, but got {value!r}")
        return value

    def checked(self, name: str, kind: type, check: Callable[[Any], Any], rule: str,
                default: Any = REQUIRED) -> Any:
        """What ``check`` returns for the value of ``name``; when it raises InputError, an error
        saying the value must be ``rule`` (``check`` is the one validator of that value, shared with
        callers that do not read TOML)."""
        value = self.get(name, kind, default)
        try:
            return check(value)
        except InputError:
            raise self.error(name, f"must be {rule}, but got {toml_value(value)}") from None

    def choice(self, name: str, choices: tuple[str, ...], default: Any = REQUIRED) -> str:
        """A string among ``choices``."""
        value = self.get(name, str, default)
        if value not in choices:
            raise self.error(name, f"is {value!r}; choose one of: {', '.join(choices)}")
        return value

    def table(self, name: str) -> TomlTable:
        """The sub-table ``name`` (empty when absent)."""
        return TomlTable(self.raw.get(name, {}), self.key(name), self.source, fix=self.fix)


def toml_value(value: Any) -> str:
    """``value`` (a bool, number, string or list of them) spelled as TOML spells it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # repr round-trips exactly: a best.toml's retraining uses the very learning rate its trial used.
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                          ("inf" if value > 0 else "-inf"))
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(toml_value(item) for item in value)}]"
    # TOML basic strings take JSON's escapes.
    return json.dumps(str(value), ensure_ascii=False)
