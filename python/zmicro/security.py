"""Transport security settings.

Today zmicro speaks plaintext only; CurveZMQ with a client allowlist and a
MAC on every message become the default in the security release, without
changing call sites: ``Service`` and ``Client`` already take ``insecure=``,
and ``ZMICRO_INSECURE=1`` already means "plaintext on purpose".
"""

from __future__ import annotations

import logging
import os
import threading

__all__ = ["resolve_insecure"]

log = logging.getLogger("zmicro.security")
_said = False
_lock = threading.Lock()


def resolve_insecure(insecure: bool | None) -> bool:
    """Whether to run plaintext: the argument, else ``ZMICRO_INSECURE``.

    Returns True in this release whatever was asked (there is no secure
    mode yet) and says so once per process.
    """
    global _said
    if insecure is None:
        insecure = os.environ.get("ZMICRO_INSECURE", "") not in ("", "0")
    with _lock:
        if not _said:
            _said = True
            if insecure:
                log.warning("zmicro: insecure mode on request: traffic is plaintext "
                            "and unauthenticated")
            else:
                log.warning("zmicro: this release has no transport security yet: "
                            "traffic is plaintext and unauthenticated")
    return True
