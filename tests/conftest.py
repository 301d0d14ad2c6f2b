"""Shared test configuration.

Hypothesis runs without deadlines everywhere (a loaded 2-core CI machine
makes per-example timings meaningless); the "ci" profile, chosen when CI is
set, also prints the reproduction blob of any failure.

Every test that needs a real etcd carries the ``etcd`` marker, put on it
here at collection (``pytest -m "not etcd"`` then runs without etcd
installed): a test that uses an etcd fixture, or is a parametrisation
named "etcd" (the registry contract suite, the fault suite). A test that
reaches etcd another way without the marker fails, saying so.
"""

from __future__ import annotations

import faulthandler
import os
import sys

import pytest
import zmq
from hypothesis import HealthCheck, settings

from tests.helpers import FakeClock

# zmicro's own pytest fixtures (zmicro_keys, zmicro_serve), as a user adds them.
pytest_plugins = ["zmicro.testing"]

settings.register_profile(
    "dev",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=200,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


#: The fixtures that start or talk to etcd (here and in tests/fault/conftest.py).
ETCD_FIXTURES = frozenset({"etcd_server", "etcd_endpoint", "etcd_prefix", "etcd_registry"})


def _needs_etcd(item: pytest.Item) -> bool:
    if ETCD_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    # Suites that pick a backend by parameter get etcd's fixtures through
    # request.getfixturevalue, which collection cannot see.
    return callspec is not None and any(
        isinstance(v, str) and v == "etcd" for v in callspec.params.values())


#: How long the interpreter may take to exit after the last test before the
#: run is called hung: every thread's stack is dumped and the process exits 1.
EXIT_WATCHDOG_S = 180


def pytest_unconfigure(config):
    """A leaked non-daemon thread or a context that never terminates would
    hang the process after the summary is printed, and CI would only say
    "timed out". Arm a watchdog that shows where it hangs and fails the run."""
    faulthandler.dump_traceback_later(EXIT_WATCHDOG_S, exit=True, file=sys.__stderr__)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _needs_etcd(item):
            item.add_marker(pytest.mark.etcd)


def _require_etcd_marker(request) -> None:
    if request.node.get_closest_marker("etcd") is None:
        pytest.fail(f"{request.node.nodeid} uses etcd but has no etcd marker, so "
                    "-m 'not etcd' would still start etcd: mark it (pytest.mark.etcd) "
                    "or use an etcd fixture directly", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def zmicro_home(tmp_path_factory):
    """A fresh key store for the whole session: ``ZMICRO_HOME`` points at a
    temporary directory, in ``os.environ`` so services started in
    subprocesses inherit it. Tests never read or write ~/.config; and the
    developer's own ``ZMICRO_KEY`` / ``ZMICRO_TRUSTED``, which would bypass
    the store, are unset for the session."""
    names = ("ZMICRO_HOME", "ZMICRO_KEY", "ZMICRO_TRUSTED")
    saved = {name: os.environ.get(name) for name in names}
    home = tmp_path_factory.mktemp("zmicro-home")
    os.chmod(home, 0o700)
    for name in names:
        os.environ.pop(name, None)
    os.environ["ZMICRO_HOME"] = str(home)
    yield home
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def clock():
    """A fake clock (tests/helpers.py) at its default start: a monotonic reading."""
    return FakeClock()


@pytest.fixture
def zctx():
    """A private zmq Context, terminated (sockets closed) after the test."""
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def unused_tcp_port() -> int:
    """A loopback port free right now (the OS picks it; never a fixed one)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory):
    """A real etcd (tests/etcd_server.py) on free loopback ports for the session.

    Fails (does not skip) when etcd is not installed. Tests that stop, kill
    or reconfigure it must leave it running and as they found it; each test
    uses its own key prefix (see ``etcd_prefix``).
    """
    from tests.etcd_server import EtcdServer

    server = EtcdServer(tmp_path_factory.mktemp("etcd") / "member")
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def etcd_prefix(request) -> str:
    """A key prefix of this test's own, so tests sharing the server do not meet."""
    import uuid

    _require_etcd_marker(request)

    return f"/zmicro-test/{uuid.uuid4().hex}/"


@pytest.fixture
def etcd_endpoint(request, etcd_server) -> str:
    """The running etcd's client URL (restarted if a previous test left it down)."""
    _require_etcd_marker(request)
    etcd_server.start()
    return etcd_server.endpoint


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory):
    """A real nats-server with JetStream (tests/nats_server.py) on free
    loopback ports for the session, no authentication.

    Fails (does not skip) when nats-server is not installed. Tests that stop
    or kill it must leave it running; each test uses its own topics (see
    ``nats_topic``), so tests sharing the server do not meet.
    """
    from tests.nats_server import NatsServer

    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def nats_url(nats_server) -> str:
    """The running nats-server's URL (restarted if a previous test left it down)."""
    nats_server.start()
    return nats_server.url


@pytest.fixture
def nats_topic() -> str:
    """A topic of this test's own (streams and consumers are per topic)."""
    import uuid

    return f"test.{uuid.uuid4().hex[:12]}"
