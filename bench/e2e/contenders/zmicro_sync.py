"""zmicro, sync client: ``Client.call`` one call at a time, against the
``svc.run()`` echo service of ``zmicro_service.py``."""

from __future__ import annotations

from harness import run, time_calls, wait_ready

from contenders import zmicro_service as svc


def probe() -> None:
    svc.probe("Client")


def _client(args):
    import zmicro

    client = zmicro.Client(insecure=True)
    addr = svc.address(args.port)
    timeout = args.timeout_ms / 1000

    def call(body: bytes, timeout: float = timeout) -> bytes:
        return client.call(svc.SERVICE, svc.ENDPOINT, body, address=addr,
                           content_type=svc.CONTENT_TYPE, timeout=timeout)

    return call


def latency(args, body: bytes):
    return time_calls(_client(args), body, args.warmup, args.iterations)


def ping(args, body: bytes) -> None:
    call = _client(args)
    wait_ready(lambda left: call(body, timeout=min(left, 1.0)),
               args.timeout_ms / 1000)


if __name__ == "__main__":
    run(probe=probe, server=svc.server, latency=latency, ping=ping,
        info=svc.info)
