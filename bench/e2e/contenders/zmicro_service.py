"""The zmicro echo service that both zmicro contenders call: one sync
handler, octet-stream (bytes in, bytes out), ``insecure=True`` so that it is
compared with the plaintext baselines, served by the blocking ``svc.run()``
(the fast path: the server waits in libzmq with the GIL released).
"""

from __future__ import annotations

from harness import HOST

SERVICE = "bench"
ENDPOINT = "Bench.Echo"
CONTENT_TYPE = "application/octet-stream"


def probe(*names: str) -> None:
    """Import zmicro and check that it has what the benchmark calls: until
    it does, the contenders are reported unavailable with this reason."""
    import zmicro

    missing = [n for n in ("Service", *names) if not hasattr(zmicro, n)]
    if missing:
        raise SystemExit(f"zmicro {zmicro.__version__} has no "
                         f"{', '.join('zmicro.' + n for n in missing)} yet")


def info() -> dict:
    import zmq

    import zmicro

    return {"zmicro": zmicro.__version__, "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version()}


def address(port: int) -> str:
    return f"tcp://{HOST}:{port}"


def server(args) -> None:
    import zmicro

    svc = zmicro.Service(SERVICE, address=address(args.port), insecure=True)

    @svc.handler(ENDPOINT)
    def echo(req: bytes, ctx) -> bytes:
        return req

    svc.run()
