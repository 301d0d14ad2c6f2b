"""``python -m zmicro``: the ``zmicro`` command (see :mod:`zmicro.cli`)."""

from .cli import main

main()
