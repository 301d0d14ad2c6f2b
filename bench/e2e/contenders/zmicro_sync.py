"""zmicro, sync client: ``Client.call`` one call at a time, against the
``svc.run()`` echo service of ``zmicro_service.py``. Plaintext
(``insecure=True``); ``zmicro_secure_sync.py`` runs it with the defaults."""

from __future__ import annotations

from harness import run, time_calls, wait_ready

from contenders import zmicro_service as svc


def probe(secure: bool = False) -> None:
    svc.probe("Client", secure=secure)


def _client(args, secure: bool = False):
    import zmicro

    svc.require_home()
    if secure:
        client = svc.with_defaults("zmicro.Client()", zmicro.Client)
    else:
        client = zmicro.Client(insecure=True)
    addr = svc.address(args.port)
    timeout = args.timeout_ms / 1000

    def call(body: bytes, timeout: float = timeout) -> bytes:
        return client.call(svc.SERVICE, svc.ENDPOINT, body, address=addr,
                           content_type=svc.CONTENT_TYPE, timeout=timeout)

    return call


def latency(args, body: bytes, secure: bool = False):
    return time_calls(_client(args, secure), body, args.warmup,
                      args.iterations)


def ping(args, body: bytes, secure: bool = False) -> None:
    call = _client(args, secure)
    wait_ready(lambda left: call(body, timeout=min(left, 1.0)),
               args.timeout_ms / 1000)


if __name__ == "__main__":
    run(probe=probe, server=svc.server, latency=latency, ping=ping,
        info=svc.info)
