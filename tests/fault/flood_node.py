"""A service under a connection flood, in its own process.

    python tests/fault/flood_node.py REGISTRY_DIR SOFT HARD HANDSHAKE_TIMEOUT|default

Sets its open-files limit to (SOFT, HARD) before zmicro starts (the
Service's own raise is part of what is tested), logs at INFO to stderr,
prints ``READY <address>`` once serving. TTL 4 s: without heartbeats the
node is gone from the registry within seconds.
"""

from __future__ import annotations

import logging
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), int(sys.argv[3])))

import zmicro  # noqa: E402
from zmicro.registry import EmbeddedRegistry  # noqa: E402

from tests.processes import announce_ready  # noqa: E402

logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(asctime)s %(name)s %(message)s")
options = {} if sys.argv[4] == "default" else {"handshake_timeout": float(sys.argv[4])}
svc = zmicro.Service("flooded", registry=EmbeddedRegistry(sys.argv[1]), ttl=4.0, **options)
svc.handler("Flood.Echo")(lambda req, ctx: req)
announce_ready(svc)
svc.run()
