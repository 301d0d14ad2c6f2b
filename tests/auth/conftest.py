"""Fixtures of the security-policy tests: Curve keys, principals, an
audit recorder, and in-process services (the ``clock`` fixture is
tests/conftest.py's)."""

from __future__ import annotations


import pytest
import zmq

import zmicro
from zmicro.auth.principal import Principal
from zmicro.registry import MemoryRegistry

from ..processes import InProcess


def new_key() -> str:
    """A fresh Curve public key, Z85."""
    public, _secret = zmq.curve_keypair()
    return public.decode()


class AuditRecorder:
    """Stands in for zmicro.auth.audit.audit; keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict]] = []

    def __call__(self, decision, reason, **fields) -> None:
        self.calls.append((decision, reason, fields))

    @property
    def decisions(self) -> list[tuple[str, str]]:
        return [(d, r) for d, r, _ in self.calls]


@pytest.fixture
def recorder() -> AuditRecorder:
    return AuditRecorder()


def as_principal(principals: dict[str, Principal]):
    """A test server interceptor standing in for the transport: in insecure
    mode ctx.principal is None, so the caller names itself in the metadata
    key "as" (never do this outside tests)."""

    def interceptor(request, ctx, next):
        who = ctx.metadata.get("as")
        if who is not None:
            ctx.principal = principals[who.decode()]
        return next(request, ctx)

    return interceptor


def make_service(registry, interceptors, *, name: str = "p") -> zmicro.Service:
    svc = zmicro.Service(name, registry=registry, insecure=True, interceptors=interceptors)

    @svc.handler("P.Echo")
    def echo(request, ctx):
        return request

    @svc.handler("P.Whoami")
    def whoami(request, ctx):
        p = ctx.principal
        return None if p is None else {"subject": p.subject, "roles": sorted(p.all_roles)}

    @svc.handler("P.Async")
    async def async_echo(request, ctx):
        return request

    return svc


@pytest.fixture
def memory_registry() -> MemoryRegistry:
    return MemoryRegistry()


@pytest.fixture
def served(memory_registry):
    """served(interceptors) runs make_service(...) in a thread until the test
    ends and returns a Client for it."""
    running: list[InProcess] = []
    clients: list[zmicro.Client] = []

    def start(interceptors) -> zmicro.Client:
        running.append(InProcess(make_service(memory_registry, interceptors)))
        clients.append(zmicro.Client(registry=memory_registry, insecure=True, timeout=30))
        return clients[-1]

    yield start
    for c in clients:
        c.close()
    for r in running:
        r.stop()
