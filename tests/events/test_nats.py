"""The NATS broker against a real nats-server (tests/nats_server.py).

First the fixture itself: JetStream answers, a restart keeps the port and
the store, each authentication variant lets the right client in and keeps
the wrong one out.
"""

from __future__ import annotations

import asyncio

import nats
import pytest

from tests.nats_server import NatsServer


def _run(coro):
    return asyncio.run(coro)


async def _roundtrip(url: str, **options) -> bytes:
    """Connect, store one message in a stream, read it back: what the broker needs."""
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=5, **options)
    try:
        js = nc.jetstream()
        await js.add_stream(name="FIXTURE", subjects=["fixture.>"])
        await js.publish("fixture.one", b"stored")
        return (await js.get_last_msg("FIXTURE", "fixture.one")).data
    finally:
        await nc.close()


def test_server_runs_jetstream_on_free_ports(nats_server):
    assert nats_server.port != 4222 and nats_server.monitor_port != nats_server.port
    assert nats_server.varz("jsz")["config"]["store_dir"].startswith(str(nats_server.store_dir))
    assert _run(_roundtrip(nats_server.url)) == b"stored"


def test_restart_keeps_port_and_store(tmp_path):
    server = NatsServer(tmp_path / "restart")
    try:
        server.start()
        port = server.port
        assert _run(_roundtrip(server.url)) == b"stored"
        server.kill()
        server.start()
        assert server.port == port

        async def read_back() -> bytes:
            nc = await nats.connect(server.url, allow_reconnect=False)
            try:
                return (await nc.jetstream().get_last_msg("FIXTURE", "fixture.one")).data
            finally:
                await nc.close()

        assert _run(read_back()) == b"stored"
    finally:
        server.cleanup()


@pytest.mark.parametrize("auth", ["password", "token", "nkey"])
def test_auth_variants(tmp_path, auth):
    server = NatsServer(tmp_path / auth, auth=auth)
    try:
        server.start()
        with pytest.raises(Exception, match="[Aa]uthoriz"):
            _run(_roundtrip(server.url))
        good = {"password": {"user": server.user, "password": server.password},
                "token": {"token": server.token},
                "nkey": {"nkeys_seed_str": server.nkey_seed}}[auth]
        assert _run(_roundtrip(server.url, **good)) == b"stored"
    finally:
        server.cleanup()


def test_tls_variant(tmp_path):
    server = NatsServer(tmp_path / "tls", tls=True)
    try:
        server.start()
        assert server.url.startswith("tls://")
        assert _run(_roundtrip(server.url, tls=server.client_ssl_context())) == b"stored"
        import ssl
        untrusting = ssl.create_default_context()  # the system CAs: not ours
        with pytest.raises(ssl.SSLError):
            _run(_roundtrip(server.url, tls=untrusting))
    finally:
        server.cleanup()


def test_missing_binary_fails_loudly(monkeypatch):
    import tests.nats_server as ns

    monkeypatch.setattr(ns, "NATS", "/nonexistent/nats-server")
    with pytest.raises(RuntimeError, match="apt-get install -y nats-server"):
        ns.require_nats()
