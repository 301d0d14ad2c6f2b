"""A Service's ``policy=`` reaches the embedded broker it makes (no
``broker=`` given): that broker decides ``zmicro.topic.<topic>:subscribe``
with the service's rules before it sends an event to a member, as
``Publisher(policy=)`` and ``EmbeddedBroker(policy=)`` do.

One secure Service on a private embedded registry subscribes to two
topics; its rules let its own key (role ``self``) publish to both and
subscribe to one. Events published through the service's own broker reach
the permitted subscription and are dead-lettered for the other.
"""

from __future__ import annotations

import zmicro
from zmicro.auth import Policy, Rule, topic_resource
from zmicro.broker.embedded import NO_PERMITTED, EmbeddedBroker
from zmicro.registry import EmbeddedRegistry

from ..helpers import eventually
from ..processes import private_dir


def test_a_services_policy_decides_who_may_subscribe_through_its_default_broker(
        zmicro_keys, zmicro_serve, tmp_path_factory):
    directory = str(private_dir(tmp_path_factory, "events-policy"))
    svc = zmicro.Service("billing", registry=EmbeddedRegistry(directory), policy=Policy(rules=[
        Rule(topic_resource("order.*", "publish"), "self"),
        Rule(topic_resource("order.paid", "subscribe"), "self"),
    ]))  # no subscribe right on order.created: the rules' default denies it
    handled: list[str] = []

    @svc.subscriber("order.created", queue="billing")
    def on_created(ev: dict, ctx: zmicro.EventContext) -> None:
        handled.append(ctx.topic)

    @svc.subscriber("order.paid", queue="billing")
    def on_paid(ev: dict, ctx: zmicro.EventContext) -> None:
        handled.append(ctx.topic)

    zmicro_serve(svc)
    broker = svc._broker
    assert isinstance(broker, EmbeddedBroker)  # made by the service: broker=None
    with zmicro.Publisher(broker=broker) as pub:
        pub.publish("order.paid", {"id": 1})
        pub.publish("order.created", {"id": 2})
        letters = eventually(broker.dead_letters, "a dead letter")
        eventually(lambda: handled == ["order.paid"], "the permitted event handled")
    assert [(d.topic, d.queue, d.reason) for d in letters] == \
        [("order.created", "billing", NO_PERMITTED)]
    stats = broker.stats()
    assert stats["denied"] >= 1 and stats["refusals"] == 0  # skipped, never sent
    assert handled == ["order.paid"]
