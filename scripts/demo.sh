#!/usr/bin/env bash
# The demo: set up .venv (first run only), build and install zmicro, then run
# a server process and a client process exchanging signed zmicro messages
# over TCP through the core, printing replies and latencies.
ZMICRO_EXTRAS=test source "$(dirname "$0")/_env.sh"
exec "$VPY" examples/wire_demo.py "$@"
