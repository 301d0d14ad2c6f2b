#!/usr/bin/env bash
# The demo: set up .venv (first run only), build and install zmicro, then run
# the greeter service in one process (on the embedded registry) and call it
# by name from another, printing replies and latencies.
ZMICRO_EXTRAS=test source "$(dirname "$0")/_env.sh"
exec "$VPY" examples/demo.py "$@"
