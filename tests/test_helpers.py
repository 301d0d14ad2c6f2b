"""The shared test helpers (tests/helpers.py) do what the suite relies on."""

from __future__ import annotations

import asyncio
import threading

import pytest

from .helpers import UNIX_START, FakeClock, eventually, eventually_async


def counting(*results):
    """A predicate returning (or raising) ``results`` in turn, then the last one; counts its calls."""
    calls = []

    def predicate():
        result = results[min(len(calls), len(results) - 1)]
        calls.append(result)
        if isinstance(result, BaseException):
            raise result
        return result

    return predicate, calls


def test_eventually_returns_the_first_truthy_value():
    predicate, calls = counting(0, [], "found", "later")
    assert eventually(predicate, "a value", interval=0) == "found"
    assert calls == [0, [], "found"]


def test_eventually_names_what_and_the_last_value_on_timeout():
    predicate, calls = counting(None, 0)
    with pytest.raises(AssertionError) as info:
        eventually(predicate, "the answer", timeout=0.05, interval=0.001)
    assert "the answer" in str(info.value) and "returned 0" in str(info.value)
    assert len(calls) >= 2  # it tried more than once


def test_eventually_retries_an_exception_and_names_the_last_one():
    predicate, calls = counting(ConnectionRefusedError("restarting"), True)
    assert eventually(predicate, "a server", interval=0) is True
    assert len(calls) == 2

    failing, _ = counting(ValueError("still broken"))
    with pytest.raises(AssertionError, match="a fix.*still broken") as info:
        eventually(failing, "a fix", timeout=0.05, interval=0.001)
    assert isinstance(info.value.__cause__, ValueError)


def test_eventually_stops_at_once_on_pytest_fail():
    def predicate():
        pytest.fail("the process died")

    with pytest.raises(pytest.fail.Exception, match="the process died"):
        eventually(predicate, "never", timeout=10)


def test_eventually_async_awaits_and_lets_the_loop_run():
    async def main():
        flag = []

        async def later():
            await asyncio.sleep(0.01)
            flag.append("set")

        task = asyncio.ensure_future(later())

        async def flagged():
            return flag

        # A blocking wait would starve `later` and time out.
        assert await eventually_async(flagged, "the task runs", timeout=10) == ["set"]
        assert await eventually_async(lambda: len(flag), "a plain predicate") == 1
        await task
        with pytest.raises(AssertionError, match="nothing"):
            await eventually_async(lambda: None, "nothing", timeout=0.05)

    asyncio.run(main())


def test_fake_clock_moves_only_when_told():
    clock = FakeClock()
    assert clock() == clock() == 1000.0
    clock.advance(2.5)
    assert clock() == 1002.5
    clock.advance(-10)  # wall clocks step back
    assert clock.now == 992.5
    clock.set(7)
    assert clock() == 7
    assert FakeClock(UNIX_START)() == UNIX_START


def test_fake_clock_counts_calls_not_peeks():
    clock = FakeClock(0.0)
    clock()
    clock()
    _ = clock.now
    assert clock.reads == 2


def test_fake_clock_step_moves_it_at_every_call():
    clock = FakeClock(0.0, step=100.0)
    assert [clock(), clock(), clock.now] == [100.0, 200.0, 200.0]


def test_fake_clock_loses_no_advance_across_threads():
    clock = FakeClock(0.0)

    def advance():
        for _ in range(20_000):
            clock.advance(1)
            clock()

    threads = [threading.Thread(target=advance) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock.now == 80_000 and clock.reads == 80_000
