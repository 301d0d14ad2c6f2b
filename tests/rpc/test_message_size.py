"""The largest frame (docs/protocol.md §1, docs/security.md §7): 4 MiB by
default on both sides (gRPC's default receive limit), ``max_message_size=``
to change it.

A client refuses a larger request before sending it (MAXMSGSIZE would drop
the connection and every call on it); a peer that sends a larger frame
anyway loses its connection, in libzmq, before any zmicro check runs, and
the service goes on serving the others. Under Curve the limit counts the
frame as sent, not its 33 bytes of encryption: a 4 MiB body goes through.
"""

from __future__ import annotations

import pytest

import zmicro
from zmicro import _core, wire
from zmicro.registry import MemoryRegistry
from zmicro.security.keys import KeyStore

from ..helpers import eventually
from .raw_peer import OCTETS, SERVICE, WAIT, RawPeer, request, secure_node

MiB = 1024 * 1024


def test_the_default_is_4_mib():
    assert _core.MESSAGE_MAX_DEFAULT == 4 * MiB
    assert zmicro.service.DEFAULT_MAX_MESSAGE == 4 * MiB


@pytest.fixture
def node(serve, tmp_path):
    return secure_node(serve, tmp_path / "home")


def echo(client, body: bytes) -> bytes:
    return client.call(SERVICE, "Greeter.Echo", body, content_type=OCTETS, timeout=WAIT)


@pytest.mark.parametrize("secure", [True, False], ids=["secure", "insecure"])
def test_4_mib_is_served_and_a_byte_more_refused_before_sending(serve, tmp_path, secure):
    if secure:
        node = secure_node(serve, tmp_path / "home")
        svc, options = node.svc, dict(keys=node.store)
    else:
        svc = zmicro.Service(SERVICE, registry=MemoryRegistry(), insecure=True)
        svc.handler("Greeter.Echo")(lambda req, ctx: req)
        serve(svc)
        options = dict(insecure=True)
    with zmicro.Client(registry=svc._registry, **options) as client:
        body = bytes(range(256)) * (4 * MiB // 256)
        assert echo(client, body) == body  # the request and the reply, 4 MiB each
        with pytest.raises(zmicro.RPCError) as err:
            echo(client, body + b"!")
        assert err.value.code == zmicro.Code.RESOURCE_EXHAUSTED
        assert "max_message_size" in err.value.detail and str(4 * MiB + 1) in err.value.detail
        assert err.value.processed is False  # it never left the client
        # Nothing was sent: the connection and its next calls are intact.
        assert echo(client, b"after") == b"after"
    assert svc.stats()["requests"] == 2


def test_a_larger_frame_drops_the_senders_connection_only(node, zctx):
    ring = node.ring()
    big = RawPeer(zctx, node.address, node.server_key, node.store.identity())
    try:
        # Exactly the limit passes (the Curve overhead is not counted)...
        header = request(1)
        big.send(ring.seal(header, [b"x" * (4 * MiB)]))
        _, reply = big.answer()
        assert reply.kind == wire.Kind.REPLY
        assert "DISCONNECTED" not in big.connection_events()
        # ... one byte more is dropped by libzmq with the connection (no
        # answer, no zmicro check ran: nothing is counted).
        big.send(ring.seal(request(2), [b"x" * (4 * MiB + 1)]))
        eventually(lambda: "DISCONNECTED" in big.connection_events(),
                   "the server dropped the connection")
        stats = node.svc.stats()
        assert (stats["requests"], stats["malformed"], stats["unauthenticated"]) == (1, 0, 0)
    finally:
        big.close()
    # Everyone else is served.
    with zmicro.Client(registry=node.svc._registry, keys=node.store) as client:
        assert echo(client, b"still here") == b"still here"


def test_max_message_size_raises_the_limit_on_both_sides(serve, tmp_path):
    node = secure_node(serve, tmp_path / "home", max_message_size=8 * MiB)
    body = b"y" * (6 * MiB)
    with zmicro.Client(registry=node.svc._registry, keys=node.store,
                       max_message_size=8 * MiB) as client:
        assert echo(client, body) == body
    # A client left at the default refuses it itself.
    with zmicro.Client(registry=node.svc._registry, keys=node.store) as client:
        with pytest.raises(zmicro.RPCError) as err:
            echo(client, body)
        assert err.value.code == zmicro.Code.RESOURCE_EXHAUSTED
    assert node.ran == [body]


def test_a_reply_over_the_limit_is_refused_by_the_server(serve, tmp_path, caplog):
    """A handler whose reply would break the limit gets its caller
    RESOURCE_EXHAUSTED (the handler ran), not a dropped connection that
    fails every call on it; the service logs it."""
    node = secure_node(serve, tmp_path / "home")
    with zmicro.Client(registry=node.svc._registry, keys=node.store) as client:
        body = b"z" * (4 * MiB - 100)  # the request fits...
        with pytest.raises(zmicro.RPCError) as err:
            client.call(SERVICE, "Greeter.Double", body, content_type=OCTETS,
                        timeout=WAIT)  # ... its reply (twice as long) does not
        assert err.value.code == zmicro.Code.RESOURCE_EXHAUSTED
        assert "reply" in err.value.detail and "max_message_size" in err.value.detail
        assert err.value.processed is True
        assert echo(client, b"same connection") == b"same connection"
    assert node.svc.stats()["replies"]["RESOURCE_EXHAUSTED"] == 1
    assert any("max_message_size" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("secure", [True, False], ids=["secure", "insecure"])
@pytest.mark.parametrize("mode", ["inline", "blocking"])
def test_a_reply_over_the_callers_own_limit_is_refused(serve, tmp_path, secure, mode):
    """A client that accepts 64 KiB states it in its requests (maxReplySize):
    a 1 MiB reply, well within the service's own 4 MiB, is answered
    RESOURCE_EXHAUSTED instead of reaching the client, whose libzmq would
    drop the connection; the next call on that connection is served."""
    if secure:
        store = KeyStore(tmp_path / "home")
        store.identity()
        options = dict(keys=store)
    else:
        options = dict(insecure=True)
    svc = zmicro.Service("big-replies", registry=MemoryRegistry(), **options)
    svc.handler("Big.Reply", blocking=mode == "blocking")(lambda req, ctx: b"r" * MiB)
    svc.handler("Big.Echo", blocking=mode == "blocking")(lambda req, ctx: req)
    serve(svc)
    with zmicro.Client(registry=svc._registry, max_message_size=64 * 1024,
                       **options) as client:
        def call(endpoint, body):
            return client.call("big-replies", endpoint, body, content_type=OCTETS,
                               timeout=WAIT)
        assert call("Big.Echo", b"first") == b"first"
        with pytest.raises(zmicro.RPCError) as err:
            call("Big.Reply", b"")
        assert err.value.code == zmicro.Code.RESOURCE_EXHAUSTED
        assert f"max_message_size of {64 * 1024} bytes" in err.value.detail
        assert call("Big.Echo", b"then") == b"then"
        assert call("Big.Echo", b"e" * 60_000) == b"e" * 60_000  # under the limit: served
    assert svc.stats()["replies"]["RESOURCE_EXHAUSTED"] == 1
    assert svc.stats()["replies"]["OK"] == 3


def test_a_caller_that_states_no_limit_gets_the_default(serve):
    """maxReplySize 0 (an older client, or one that does not state it) means
    4 MiB, even from a service that allows itself larger frames; a client
    that accepts more says so, and gets it."""
    svc = zmicro.Service("roomy", registry=MemoryRegistry(), insecure=True,
                         max_message_size=8 * MiB)
    svc.handler("Big.Reply")(lambda req, ctx: b"r" * (5 * MiB))
    serve(svc)
    with zmicro.Client(registry=svc._registry, insecure=True) as default:
        with pytest.raises(zmicro.RPCError) as err:
            default.call("roomy", "Big.Reply", b"", content_type=OCTETS, timeout=WAIT)
        assert err.value.code == zmicro.Code.RESOURCE_EXHAUSTED
        assert f"max_message_size of {4 * MiB} bytes" in err.value.detail
    with zmicro.Client(registry=svc._registry, insecure=True,
                       max_message_size=8 * MiB) as roomy:
        assert len(roomy.call("roomy", "Big.Reply", b"", content_type=OCTETS,
                              timeout=WAIT)) == 5 * MiB
