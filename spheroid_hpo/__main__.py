"""``python -m spheroid_hpo``: the same commands as the ``spheroid-hpo`` script."""

from spheroid_hpo.cli import main

main()
