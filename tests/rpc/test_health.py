"""The built-in health endpoints (zmicro.Health.Check / Watch), the serving
status in the registry, and what draining does to them. Services run with
the default security (CurveZMQ + MAC) unless a test says otherwise."""

from __future__ import annotations

import threading

import pytest

import zmicro
from zmicro import Code, RPCError, health
from zmicro.health import NOT_SERVING, SERVICE_UNKNOWN, SERVING

from ..helpers import WAIT, FakeClock, eventually
from ..processes import InProcess


def node_health(registry, name) -> list[str]:
    return [n.metadata.get("health", "") for r in registry.get(name) for n in r.nodes]


@pytest.fixture
def healthy(memory_registry):
    release = threading.Event()
    svc = zmicro.Service("healthy", registry=memory_registry, max_watchers=2)

    @svc.handler("Health.Check")  # the user's own: no clash with zmicro's
    def own(req, ctx):
        return "mine"

    @svc.handler("H.Slow", blocking=True)
    def slow(req, ctx):
        release.wait(60)
        return "slow done"

    running = InProcess(svc)
    client = zmicro.Client(registry=memory_registry, timeout=WAIT)
    yield svc, client, release, running
    release.set()
    client.close()
    running.stop()


def check(client, request=None):
    return client.call("healthy", health.CHECK, request)["status"]


def watch(client, **request):
    return client.call("healthy", health.WATCH, request)["status"]


def test_check_and_set_serving(healthy, memory_registry):
    svc, client, _, _ = healthy
    assert check(client) == check(client, {}) == check(client, {"service": "healthy"}) == SERVING
    assert check(client, {"service": "another"}) == SERVICE_UNKNOWN
    assert client.call("healthy", "Health.Check", None) == "mine"
    assert node_health(memory_registry, "healthy") == ["serving"]

    svc.set_serving(False)
    assert not svc.serving
    assert check(client) == NOT_SERVING
    eventually(lambda: node_health(memory_registry, "healthy") == ["not_serving"],
          "the registry to say not_serving")
    svc.set_serving(True)
    assert check(client) == SERVING
    eventually(lambda: node_health(memory_registry, "healthy") == ["serving"],
          "the registry to say serving again")


def test_watch_answers_at_once_when_the_status_differs(healthy):
    _, client, _, _ = healthy
    assert watch(client) == SERVING  # no `last`: the status now
    assert watch(client, last=NOT_SERVING, wait=60) == SERVING
    assert watch(client, service="another", last=SERVING) == SERVICE_UNKNOWN


def test_watch_returns_on_change(healthy):
    svc, client, _, _ = healthy
    results: list = []
    t = threading.Thread(target=lambda: results.append(watch(client, last=SERVING, wait=60)),
                         daemon=True)
    t.start()
    eventually(lambda: svc.stats()["watchers"] == 1, "the watch to wait")
    assert not results
    svc.set_serving(False)
    t.join(WAIT)
    assert results == [NOT_SERVING]


def test_watch_returns_the_same_status_after_wait(healthy):
    _, client, _, _ = healthy
    assert watch(client, last=SERVING, wait=0.1) == SERVING


def test_watch_request_is_checked(healthy):
    _, client, _, _ = healthy
    for bad in ({"wait": -1}, {"wait": health.MAX_WAIT + 1}, {"last": 3}):
        with pytest.raises(RPCError) as err:
            client.call("healthy", health.WATCH, bad)
        assert err.value.code == Code.INVALID_ARGUMENT
        assert next(iter(bad)) in err.value.detail  # names the field


def test_watchers_are_bounded(healthy):
    svc, client, _, _ = healthy
    threads = [threading.Thread(target=watch, args=(client,),
                                kwargs={"last": SERVING, "wait": 60}, daemon=True)
               for _ in range(2)]
    for t in threads:
        t.start()
    eventually(lambda: svc.stats()["watchers"] == 2, "two watches to wait")
    with pytest.raises(RPCError) as err:
        watch(client, last=SERVING, wait=60)
    assert err.value.code == Code.RESOURCE_EXHAUSTED
    svc.set_serving(False)  # releases both
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive()


def test_draining_says_not_serving_and_releases_watchers(healthy, memory_registry):
    svc, client, release, running = healthy
    address = svc.address
    slow: list = []
    watched: list = []
    slow_caller = threading.Thread(target=lambda: slow.append(
        client.call("healthy", "H.Slow", None, address=address)), daemon=True)
    slow_caller.start()
    watcher = threading.Thread(target=lambda: watched.append(
        client.call("healthy", health.WATCH, {"last": SERVING, "wait": 60}, address=address)),
        daemon=True)
    watcher.start()
    eventually(lambda: svc.stats()["in_flight"] == 2 and svc.stats()["watchers"] == 1,
          "the slow call and the watch")
    svc.stop()
    watcher.join(WAIT)
    assert watched == [{"status": NOT_SERVING}]
    # Still draining (the slow call holds it): health answers, other calls not.
    assert running.thread.is_alive()
    assert client.call("healthy", health.CHECK, None, address=address) == {
        "status": NOT_SERVING}
    with pytest.raises(RPCError) as err:
        client.call("healthy", "Health.Check", None, address=address)
    assert err.value.code == Code.UNAVAILABLE
    svc.set_serving(True)  # no effect on a stopping service
    assert client.call("healthy", health.CHECK, None, address=address) == {
        "status": NOT_SERVING}
    release.set()
    slow_caller.join(WAIT)
    running.thread.join(WAIT)
    assert slow == ["slow done"] and not running.thread.is_alive()


def test_health_works_on_an_async_service(memory_registry, serve):
    svc = zmicro.Service("healthy", registry=memory_registry)

    @svc.handler("H.Async")
    async def hello(req, ctx):
        return "async"

    serve(svc, use_asyncio=True)
    with zmicro.Client(registry=memory_registry, timeout=WAIT) as client:
        assert check(client) == SERVING
        assert watch(client, last=SERVING, wait=0.1) == SERVING


@pytest.mark.parametrize("name", [health.CHECK, health.WATCH, "zmicro.Anything"])
def test_the_zmicro_prefix_is_reserved(name):
    svc = zmicro.Service("reserved", insecure=True)
    with pytest.raises(ValueError, match="zmicro"):
        svc.handler(name)(lambda req, ctx: None)


# -- the Health object, without a service ------------------------------------


def test_watch_times_its_wait_with_the_injected_clock():
    clock = FakeClock(0.0, step=100.0)  # every look at the clock: 100 s later
    h = health.Health("svc", clock=clock)
    # wait=60: expired at the first look, whatever the real time.
    assert h.watch(health.WatchRequest(last=SERVING, wait=60), None).status == SERVING


def test_on_change_reports_changes_only():
    seen = []
    h = health.Health("svc", on_change=seen.append)
    assert not h.set_serving(True)
    assert h.set_serving(False) and h.status() == NOT_SERVING
    h.drain()  # already not serving: no change
    assert not h.set_serving(True)  # draining wins
    assert seen == [False] and h.status() == NOT_SERVING and h.draining
    h.reset()
    assert h.status() == SERVING


def test_max_watchers_is_validated():
    with pytest.raises(ValueError, match="max_watchers"):
        health.Health("svc", max_watchers=0)


# -- health behind the policy, or not (issue 10.3) --------------------------------


@pytest.mark.parametrize("public", [True, False])
def test_health_public_decides_whether_the_policy_applies(memory_registry, public):
    """A policy that grants nobody anything: with health_public (the
    default) the health endpoints still answer, the others are refused;
    without, health is refused like any endpoint, and a rule can grant it."""
    from zmicro.auth import Policy, Rule, Rules
    deny_all = Policy(rules=Rules([]))  # default DENY
    svc = zmicro.Service(f"policed-{public}", registry=memory_registry, policy=deny_all,
                         health_public=public)
    svc.handler("P.Work")(lambda req, ctx: "worked")
    running = InProcess(svc)
    try:
        with zmicro.Client(registry=memory_registry, timeout=WAIT) as client:
            with pytest.raises(RPCError) as err:
                client.call(svc.name, "P.Work", None)
            assert err.value.code == Code.PERMISSION_DENIED
            for endpoint, request in ((health.CHECK, {}),
                                      (health.WATCH, {"last": "", "wait": 1})):
                if public:
                    assert client.call(svc.name, endpoint, request) == {"status": SERVING}
                else:
                    with pytest.raises(RPCError) as err:
                        client.call(svc.name, endpoint, request)
                    assert err.value.code == Code.PERMISSION_DENIED
    finally:
        running.stop()


def test_a_rule_can_grant_health_behind_the_policy(memory_registry):
    from zmicro.auth import Policy, Rule, Rules
    policy = Policy(rules=Rules([Rule("*:zmicro.Health.Check", "*")]))
    svc = zmicro.Service("policed-granted", registry=memory_registry, policy=policy,
                         health_public=False)
    svc.handler("P.Work")(lambda req, ctx: "worked")
    running = InProcess(svc)
    try:
        with zmicro.Client(registry=memory_registry, timeout=WAIT) as client:
            assert client.call(svc.name, health.CHECK, {}) == {"status": SERVING}
            with pytest.raises(RPCError) as err:
                client.call(svc.name, health.WATCH, {"last": "", "wait": 1})
            assert err.value.code == Code.PERMISSION_DENIED
    finally:
        running.stop()
