#!/usr/bin/env bash
# The cluster demo: install etcd-server (Debian) if it is missing, set up
# .venv with the etcd extra, then run three greeter nodes on etcd under
# load, kill one with SIGKILL and start another (examples/cluster_demo.py).
set -euo pipefail
if ! command -v etcd >/dev/null 2>&1 && [ ! -x /usr/bin/etcd ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server
fi
ZMICRO_EXTRAS=test,etcd source "$(dirname "$0")/_env.sh"
exec "$VPY" examples/cluster_demo.py "$@"
