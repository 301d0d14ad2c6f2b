"""Testing helpers: run a service in a thread of the test process and call it.

::

    from zmicro.testing import serving, temporary_keys

    def test_hello():
        with temporary_keys():                   # a throwaway key store
            svc = make_greeter()                 # your zmicro.Service
            with serving(svc) as served:         # returns once it serves
                assert served.client.call("greeter", "Greeter.Hello",
                                          {"name": "Ada"}) == {"message": "Hello Ada"}

With pytest, add ``pytest_plugins = ["zmicro.testing"]`` to the root
``conftest.py`` for the fixtures ``zmicro_keys`` (a temporary key store for
the test) and ``zmicro_serve`` (``zmicro_serve(svc)`` is ``serving(svc)``,
stopped when the test ends). See docs/testing.md.

The contract:

- :func:`serving` starts ``svc.run()`` in a thread and returns once the
  service is bound, dispatching and registered (no polling in the test);
  when the ``with`` block ends it stops the service gracefully and waits
  for the thread. A service that fails to start raises its error here.
- A service made without ``registry=`` runs on a fresh
  :class:`~zmicro.registry.MemoryRegistry` (nothing reaches the embedded
  registry of the machine); one made with a registry keeps it.
- Security is what the service has: secure by default, with the key store
  the service was made with; the clients use that same store (so they
  trust the service and it trusts them). Make the service inside
  :func:`temporary_keys` (or the ``zmicro_keys`` fixture) to keep tests
  off the user's ``~/.config/zmicro``; ``insecure=True`` on the service
  makes both sides plaintext.
- ``served.client`` is a :class:`~zmicro.Client`, ``served.aclient`` an
  :class:`~zmicro.AsyncClient` (made on first use; like any AsyncClient it
  belongs to the event loop it is first used on); both use the service's
  registry and are closed with it. Client options (``timeout=``,
  ``interceptors=``...) are keyword arguments of :func:`serving`.

This module imports pytest only to define the fixtures, and only when
pytest is installed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from .client import AsyncClient, Client
from .registry import MemoryRegistry, Registry
from .service import Service

__all__ = ["Served", "serving", "temporary_keys"]

#: Seconds a service may take to start (a loaded CI machine is slow).
START_TIMEOUT = 30.0
#: Seconds a stopping service may take to drain and close.
STOP_TIMEOUT = 30.0
# The environment that names a key store or bypasses it (zmicro.security).
_KEY_ENV = ("ZMICRO_HOME", "ZMICRO_KEY", "ZMICRO_TRUSTED", "ZMICRO_MAC_KEYS")


class Served:
    """A service running in a thread, and clients for it (see :func:`serving`)."""

    def __init__(self, service: Service, registry: Registry,
                 client_options: dict[str, Any]) -> None:
        self.service = service
        #: The registry the service is registered in.
        self.registry = registry
        #: Where the service serves (``tcp://127.0.0.1:PORT`` by default).
        self.address: str = service.address or ""
        self._options = dict(registry=registry, insecure=service.insecure,
                             keys=service._security.store, **client_options)
        #: A blocking client of the service's registry and key store.
        self.client = Client(**self._options)
        self._aclient: AsyncClient | None = None

    @property
    def aclient(self) -> AsyncClient:
        """An AsyncClient like ``client``, made on first use."""
        if self._aclient is None:
            self._aclient = AsyncClient(**self._options)
        return self._aclient

    def close(self) -> None:
        self.client.close()
        if self._aclient is not None:
            self._aclient.close()


@contextmanager
def serving(service: Service, *, start_timeout: float = START_TIMEOUT,
            stop_timeout: float = STOP_TIMEOUT, **client_options: Any) -> Iterator[Served]:
    """Run ``service`` in a thread until the block ends; yield a :class:`Served`
    once it serves. ``client_options`` go to the clients (``timeout=``...)."""
    own_registry = service._registry is None
    if service._registry is None:  # own_registry, spelt out for the type checker
        service._registry = MemoryRegistry()
    registry = service._registry
    failure: list[BaseException] = []

    def run() -> None:
        try:
            service.run()
        except BaseException as exc:  # noqa: BLE001 - raised again in the test's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"zmicro-testing({service.name})", daemon=True)
    thread.start()
    try:
        _wait_serving(service, thread, failure, start_timeout)
        served = Served(service, registry, client_options)
        try:
            yield served
        finally:
            served.close()
    finally:
        service.stop()
        thread.join(stop_timeout)
        if own_registry:
            service._registry = None
            registry.close()
        if thread.is_alive():
            raise RuntimeError(f"service {service.name!r} did not stop in {stop_timeout} s")
    if failure:  # it stopped with an error after it served
        raise failure[0]


def _wait_serving(service: Service, thread: threading.Thread, failure: list[BaseException],
                  timeout: float) -> None:
    # Service has no "started" event to wait on: its address is set last,
    # once it is bound, dispatching and registered. A short sleep between
    # looks costs the test a few milliseconds at most.
    deadline = time.monotonic() + timeout
    while service.address is None:
        if failure:
            raise failure[0]
        if not thread.is_alive():
            raise RuntimeError(f"service {service.name!r} stopped before it served")
        if time.monotonic() > deadline:
            raise TimeoutError(f"service {service.name!r} did not start in {timeout} s")
        time.sleep(0.005)


@contextmanager
def temporary_keys() -> Iterator[str]:
    """A throwaway key store: ``ZMICRO_HOME`` points at a new 0700 directory
    (``ZMICRO_KEY``, ``ZMICRO_TRUSTED`` and ``ZMICRO_MAC_KEYS``, which would
    bypass it, are unset) until the block ends; then the environment is
    restored and the directory removed. Yields its path. Services and
    clients made inside use it (the identity is created on first use)."""
    saved = {name: os.environ.get(name) for name in _KEY_ENV}
    path = tempfile.mkdtemp(prefix="zmicro-test-keys-")
    os.chmod(path, 0o700)
    for name in _KEY_ENV:
        os.environ.pop(name, None)
    os.environ["ZMICRO_HOME"] = path
    try:
        yield path
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(path, ignore_errors=True)


# -- pytest fixtures (pytest_plugins = ["zmicro.testing"]) -------------------------

try:
    import pytest
except ImportError:  # the context managers work without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def zmicro_keys() -> Iterator[str]:
        """A temporary key store for this test (:func:`temporary_keys`)."""
        with temporary_keys() as path:
            yield path

    @pytest.fixture
    def zmicro_serve(zmicro_keys: str) -> Iterator[Callable[..., Served]]:
        """``zmicro_serve(svc, **client_options)``: :func:`serving` for this
        test; a :class:`Served` once the service serves, stopped at the end.
        Runs under ``zmicro_keys``: services made in the test (after this
        fixture) get the temporary key store."""
        with ExitStack() as stack:

            def serve(service: Service, **client_options: Any) -> Served:
                return stack.enter_context(serving(service, **client_options))

            yield serve
