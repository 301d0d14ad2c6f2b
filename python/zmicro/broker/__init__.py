"""Events: the broker interface (:mod:`.base`) and its implementations."""

from __future__ import annotations

from .base import (
    TOPIC_MAX,
    TOPIC_PREFIX,
    Broker,
    BrokerError,
    Capabilities,
    DeadLetter,
    Delivery,
    SubscribeOptions,
    Subscription,
    check_topic,
)

__all__ = [
    "TOPIC_MAX",
    "TOPIC_PREFIX",
    "Broker",
    "BrokerError",
    "Capabilities",
    "DeadLetter",
    "Delivery",
    "SubscribeOptions",
    "Subscription",
    "check_topic",
]
