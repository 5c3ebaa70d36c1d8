"""allot.work.redelivery without a broker: which broker URLs have anything to restore."""

from __future__ import annotations

import pytest

from allot.work.redelivery import redis_url, restore_on_broker


@pytest.mark.parametrize(
    "broker_url",
    ["amqp://guest:guest@192.0.2.1:5672//", "pyamqp://192.0.2.1//", "sqs://", "memory://", ""],
)
def test_a_broker_that_is_not_redis_is_left_alone(broker_url: str) -> None:
    # Given a broker that is not Redis (RabbitMQ requeues a dead consumer's messages itself)
    # When restoring, Then nothing is done and nothing is connected to (192.0.2.1 answers nobody)
    assert redis_url(broker_url) is None
    assert restore_on_broker(broker_url, {"allot.c.bucket.1"}) == 0


@pytest.mark.parametrize(
    ("broker_url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("rediss://:secret@redis.example:6380/2", "rediss://:secret@redis.example:6380/2"),
        ("redis+socket:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_a_redis_broker_url_becomes_redis_pys(broker_url: str, expected: str) -> None:
    assert redis_url(broker_url) == expected


def test_no_queue_means_no_connection() -> None:
    assert restore_on_broker("redis://192.0.2.1:6379/0", set()) == 0
