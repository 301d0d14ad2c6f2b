"""zmicro.testing, used as docs/testing.md shows: a service in a thread on a
MemoryRegistry, clients handed back once it serves, secure by default with
a temporary key store."""

from __future__ import annotations

import asyncio
import os

import msgspec
import pytest

import zmicro
from zmicro.registry import EmbeddedRegistry, MemoryRegistry
from zmicro.security import KeyStore
from zmicro.testing import serving, temporary_keys


class HelloRequest(msgspec.Struct):
    name: str


def make_greeter(**options) -> zmicro.Service:
    svc = zmicro.Service("greeter", version="1.0.0", **options)

    @svc.handler("Greeter.Hello")
    def hello(req: HelloRequest, ctx: zmicro.Context) -> dict:
        caller = ctx.principal.subject if ctx.principal is not None else None
        return {"message": f"Hello {req.name}", "caller": caller}

    @svc.handler("Greeter.Wave")
    async def wave(req: dict, ctx: zmicro.Context) -> dict:
        await asyncio.sleep(0)
        return {"wave": req["name"]}

    return svc


# -- as a user writes it: the fixtures -------------------------------------------


def test_call_the_service(zmicro_serve):
    served = zmicro_serve(make_greeter())
    reply = served.client.call("greeter", "Greeter.Hello", {"name": "Ada"})
    assert reply["message"] == "Hello Ada"


def test_call_it_with_the_async_client(zmicro_serve):
    served = zmicro_serve(make_greeter())

    async def main():
        return await served.aclient.call("greeter", "Greeter.Wave", {"name": "Ada"})

    assert asyncio.run(main()) == {"wave": "Ada"}


def test_errors_reach_the_test(zmicro_serve):
    served = zmicro_serve(make_greeter())
    with pytest.raises(zmicro.RPCError) as err:
        served.client.call("greeter", "Greeter.Hello", {"nom": "Ada"})
    assert err.value.code is zmicro.Code.INVALID_ARGUMENT


# -- what the helpers promise --------------------------------------------------------


def test_secure_with_a_temporary_key_store(zmicro_serve, zmicro_keys):
    svc = make_greeter()
    served = zmicro_serve(svc)
    assert not svc.insecure and not served.client.insecure
    assert os.environ["ZMICRO_HOME"] == zmicro_keys
    identity = KeyStore(zmicro_keys).identity(create=False)
    assert svc._security.public_key == identity.public  # the temporary store's key
    assert served.client.call("greeter", "Greeter.Hello", {"name": "x"})["caller"]


def test_the_key_store_goes_away_after_the_block():
    before = os.environ.get("ZMICRO_HOME")
    with temporary_keys() as path:
        assert os.environ["ZMICRO_HOME"] == path and os.stat(path).st_mode & 0o077 == 0
    assert os.environ.get("ZMICRO_HOME") == before and not os.path.exists(path)


def test_insecure_when_the_service_says_so(zmicro_serve):
    served = zmicro_serve(make_greeter(insecure=True))
    assert served.client.insecure
    assert served.client.call("greeter", "Greeter.Hello", {"name": "x"})["caller"] is None


def test_on_a_memory_registry_unless_given_one(tmp_path):
    with temporary_keys():
        svc = make_greeter()
        with serving(svc) as served:
            assert isinstance(served.registry, MemoryRegistry)
            [record] = served.registry.get("greeter")
            assert [n.address for n in record.nodes] == [served.address]
        assert svc.address is None and svc._registry is None  # stopped, as it was

        directory = tmp_path / "registry"
        directory.mkdir(mode=0o700)
        registry = EmbeddedRegistry(directory)
        try:
            with serving(make_greeter(registry=registry)) as served:
                assert served.registry is registry
                assert registry.get("greeter")[0].nodes[0].address == served.address
            assert registry.get("greeter") == []  # deregistered on stop
        finally:
            registry.close()


def test_a_service_that_cannot_start_raises_in_the_test():
    with temporary_keys():
        empty = zmicro.Service("empty")
        with pytest.raises(RuntimeError, match="no handlers"):
            with serving(empty):
                pass


def test_client_options_are_passed_on():
    with temporary_keys():
        with serving(make_greeter(), timeout=7.5) as served:
            assert served.client.timeout == 7.5 and served.aclient.timeout == 7.5
