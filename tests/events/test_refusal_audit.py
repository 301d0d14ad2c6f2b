"""The audit lines of refused events are rate-limited: at most
REFUSAL_AUDIT_LINES per topic and reason each REFUSAL_AUDIT_PERIOD seconds,
the rest summed up in one line (``suppressed``) once the window is over,
while the counters count every refusal. A flood of forged events must not
write a WARNING line each.

Time is a FakeClock given to the limiter (events.py ``_RefusalAudit``); the
lines are read from the ``zmicro.audit`` logger."""

from __future__ import annotations

import json
import logging

import pytest

import zmicro
from zmicro import Publisher
from zmicro.auth.audit import LOGGER_NAME
from zmicro.broker.memory import MemoryBroker
from zmicro.events import REFUSAL_AUDIT_LINES, _RefusalAudit
from zmicro.registry import MemoryRegistry

from ..helpers import FakeClock, eventually

TOPIC = "order.created"


@pytest.fixture
def lines(caplog):
    """() -> the audit lines logged so far, as dicts."""
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)

    def read() -> list[dict]:
        return [json.loads(r.getMessage()) for r in caplog.records if r.name == LOGGER_NAME]

    return read


def shape(line: dict) -> tuple:
    return (line["service"], line["reason"], line.get("suppressed"))


def test_lines_per_topic_and_reason_each_period_then_a_summary(lines):
    clock = FakeClock()
    limiter = _RefusalAudit(None, lines=3, period=1.0, clock=clock)
    for _ in range(10):
        limiter("bad_mac", None, "a")
    limiter("stale", None, "a")             # another reason: its own budget
    limiter("bad_mac", None, "b")           # another topic: its own budget
    assert [shape(x) for x in lines()] == [("zmicro.topic.a", "mac:bad_mac", None)] * 3 + [
        ("zmicro.topic.a", "mac:stale", None), ("zmicro.topic.b", "mac:bad_mac", None)]
    assert all(x["decision"] == "deny" and x["endpoint"] == "publish" for x in lines())

    clock.advance(0.5)
    limiter.flush(due_only=True)            # the window is not over: nothing yet
    limiter("bad_mac", None, "a")           # still suppressed
    assert len(lines()) == 5

    clock.advance(0.5)                      # a new window: the summary, then the line
    limiter("bad_mac", None, "a")
    assert [shape(x) for x in lines()[5:]] == [("zmicro.topic.a", "mac:bad_mac", 8),
                                                ("zmicro.topic.a", "mac:bad_mac", None)]
    summary = lines()[5]
    assert (summary["principal"], summary["seconds"]) == ("anonymous", 1.0)

    for _ in range(4):                      # 2 more lines, 2 suppressed
        limiter("bad_mac", None, "a")
    clock.advance(1.0)
    limiter.flush(due_only=True)            # over: summed up without a new refusal
    limiter.flush()                         # nothing left to sum up
    assert [shape(x) for x in lines()[7:]] == [("zmicro.topic.a", "mac:bad_mac", None)] * 2 + [
        ("zmicro.topic.a", "mac:bad_mac", 2)]


def test_flush_sums_up_a_window_not_over_yet(lines):
    limiter = _RefusalAudit(None, lines=1, period=1.0, clock=FakeClock())
    for _ in range(5):
        limiter("unsigned", None, "a")
    limiter.flush()                         # (the service's stop)
    assert [shape(x) for x in lines()] == [("zmicro.topic.a", "mac:unsigned", None),
                                           ("zmicro.topic.a", "mac:unsigned", 4)]
    limiter("unsigned", None, "a")          # the window goes on: still over its budget
    limiter.flush()
    assert [shape(x) for x in lines()[2:]] == [("zmicro.topic.a", "mac:unsigned", 1)]


def test_a_flood_of_refused_events_writes_few_lines_and_counts_all(zmicro_keys, lines):
    """A secure subscriber gets 30 unsigned events in one period of its
    (fake) clock: REFUSAL_AUDIT_LINES lines, then the summary of the rest
    when it stops; the subscription and its inbox count all 30."""
    flood = 30
    mem = MemoryBroker()
    svc = zmicro.Service("billing", broker=mem, registry=MemoryRegistry())
    svc._refusal_audit = _RefusalAudit(svc._security.principal_for, clock=FakeClock())
    svc.subscriber(TOPIC)(lambda ev, ctx: None)
    try:
        with zmicro.testing.serving(svc):
            with Publisher(broker=mem, insecure=True) as pub:
                for n in range(flood):
                    pub.publish(TOPIC, {"id": n})
            eventually(lambda: svc.stats()["subscriptions"][TOPIC]["refused"] == flood,
                       "every event refused")
            assert svc._subscribers[TOPIC]._inbox.stats()["refused_unsigned"] == flood
            assert [shape(x) for x in lines()] == \
                [("zmicro.topic." + TOPIC, "mac:unsigned", None)] * REFUSAL_AUDIT_LINES
        # stopped: the rest summed up
        assert [shape(x) for x in lines()[REFUSAL_AUDIT_LINES:]] == \
            [("zmicro.topic." + TOPIC, "mac:unsigned", flood - REFUSAL_AUDIT_LINES)]
        assert len(mem.dead_letters()) == flood
    finally:
        mem.close()
