#!/usr/bin/env bash
# The test command: set up .venv (first run only), build and install zmicro
# with its test extras, run the whole test suite. Extra arguments go to pytest.
ZMICRO_EXTRAS=test source "$(dirname "$0")/_env.sh"
exec "$VPY" -m pytest "$@"
