"""``python -m zmicro``: the ``zmicro`` command (see :mod:`zmicro.cli`)."""

from .cli import main

if __name__ == "__main__":  # not when a spawned worker re-imports it
    main()
