"""The backlog of the bucket queues: how many table-task messages wait in Redis for each bucket.

Celery's Redis transport (kombu) keeps a queue as a Redis list named after the queue, and a
message sent with a priority above 0 in one more list per priority step,
``{queue}\\x06\\x16{step}``; the backlog of a bucket is the sum of their lengths (``LLEN``). A
message a worker has taken and not yet acknowledged is no longer in the lists: it is running,
not waiting. Pure reads on a client the caller passes in.
"""

from __future__ import annotations

from collections.abc import Iterable

from kombu.transport.redis import PRIORITY_STEPS, Channel
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from allot.errors import ConfigurationError
from allot.settings import Settings
from allot.work.queues import bucket_queue


def queue_keys(queue: str) -> list[str]:
    """The Redis lists holding the messages of ``queue``: its own, then one per priority
    step above 0."""
    return [queue] + [f"{queue}{Channel.sep}{step}" for step in PRIORITY_STEPS if step]


def bucket_backlog(redis: Redis, cluster: str, bucket_ids: Iterable[int]) -> dict[int, int]:
    """The number of messages waiting in the queue of each of ``bucket_ids``, read in one
    round trip.

    Raises:
        redis.RedisError: Redis cannot be reached or answered with an error.
    """
    buckets = sorted(set(bucket_ids))
    pipeline = redis.pipeline(transaction=False)
    for bucket in buckets:
        for key in queue_keys(bucket_queue(cluster, bucket)):
            pipeline.llen(key)
    lengths = pipeline.execute()
    per_queue = len(queue_keys(""))
    return {
        bucket: sum(lengths[index * per_queue : (index + 1) * per_queue])
        for index, bucket in enumerate(buckets)
    }


REDIS_SCHEMES = {"redis": "redis", "rediss": "rediss", "redis+socket": "unix"}
"""Broker URL schemes (kombu's) whose Redis allot can read, and redis-py's name for each."""


def broker_redis(settings: Settings, timeout: float = 2.0) -> Redis | None:
    """A client of the broker's Redis (None when the broker is not Redis) that connects on
    first use and gives up after ``timeout`` s without retrying: a reader shows what it could
    not read instead of waiting.

    Raises:
        ConfigurationError: the broker URL is a Redis URL redis-py cannot read.
    """
    scheme, separator, rest = settings.broker_url.partition("://")
    if not separator or scheme not in REDIS_SCHEMES:
        return None
    try:
        return Redis.from_url(
            f"{REDIS_SCHEMES[scheme]}://{rest}",
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as exc:
        raise ConfigurationError(f"invalid setting ALLOT_BROKER_URL: {exc}") from None
