"""Give a dead holder's taken, unacknowledged messages back to their bucket queues at once.

Celery acknowledges table tasks late, so a message a worker has taken (running or reserved)
stays in kombu's Redis ``unacked`` hash until the worker acknowledges it. When the worker dies,
kombu's own sweeper (``QoS.restore_visible``) puts it back only once it is older than the
visibility timeout (``ALLOT_REDELIVERY_TIMEOUT``, 300 s). :func:`restore_unacked` puts back, at
once, every such message of the given queues: the node that takes a bucket's lease calls it for
the bucket's queue (:class:`~allot.work.leases.BucketWork`, through :func:`bucket_restorer`),
after writing the fence and before consuming the queue, so the work of a dead node is back in
seconds. After a clean handoff there is nothing to restore (the donor drained).

**A double delivery is safe.** The previous holder may not be dead but frozen (a zombie): it
may wake up and run a message that was also given back here, so a message may run twice. Every
commit of a table task is fenced (:mod:`allot.work.task`): the zombie's lease token is no longer
the bucket's, so its commit is refused (``Fenced``) and writes nothing, and the committed-run
unique index refuses a second commit of one run. The cost is at most a wasted run. A restored
message gets a new delivery tag (kombu keeps the old one), so the zombie's late ack or reject of
its own delivery cannot remove or requeue the new holder's delivery of the same message.

**Safe against kombu's own restorer.** Each message moves in one transaction that watches the
``unacked`` hash, exactly as kombu's ``QoS.restore_by_tag`` does: read the entry, then remove
it from ``unacked`` and ``unacked_index`` and push the message back, or do nothing if the entry
is gone. Whoever commits second (kombu's sweeper, a second call here, the old holder's ack)
finds the entry gone, so a message is pushed back at most once. Each batch also runs under
kombu's ``unacked_mutex`` lock, the one kombu's sweeper takes, so the two do not scan at once.

**Bounded.** The hash is read with ``HSCAN`` in batches of ``batch`` entries, never whole.

**RabbitMQ needs none of this**: it requeues a consumer's unacknowledged messages as soon as
its channel or connection closes (at once for a killed process, after the heartbeat for a dead
host). :func:`redis_url` is None for any broker but Redis, and :func:`restore_on_broker` then
does nothing.

Mirrors kombu's Redis transport (``kombu/transport/redis.py``): an ``unacked`` entry is the
JSON ``[message, exchange, routing_key]``; the message goes back to the queues the exchange's
binding table (``_kombu.binding.{exchange}``) routes the routing key to, as a direct exchange
routes (Celery's queues, and so the bucket queues, are direct exchanges named after the queue),
into the priority list of its priority, at the end kombu's sweeper uses (``RPUSH``: taken
next), marked ``redelivered``. allot sets no ``global_keyprefix``; none is supported here.
"""

from __future__ import annotations

import logging
import time
import uuid
from bisect import bisect
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import virtual
from kombu.transport.redis import Channel, Mutex, MutexHeld
from kombu.utils import json as kombu_json
from redis import Redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.retry import Retry

from allot.work.queues import bucket_queue

logger = logging.getLogger(__name__)

REDIS_SCHEMES = {"redis": "redis", "rediss": "rediss", "redis+socket": "unix"}
"""Broker URL schemes (kombu's) of a Redis broker, and redis-py's name for each."""

_dumps: Callable[[Any], str] = kombu_json.dumps  # kombu's JSON: as its QoS writes entries
_loads: Callable[[str], Any] = kombu_json.loads

Entry = tuple[dict[str, Any], str, str]
"""An ``unacked`` entry: the message as kombu stored it, its exchange, its routing key."""


def redis_url(broker_url: str) -> str | None:
    """The redis-py URL of a Redis broker URL, None for any other broker (RabbitMQ's
    ``amqp://``, ``pyamqp://``, ...: nothing to restore there)."""
    scheme, separator, rest = broker_url.partition("://")
    if not separator or scheme not in REDIS_SCHEMES:
        return None
    return f"{REDIS_SCHEMES[scheme]}://{rest}"


def restore_on_broker(broker_url: str, queues: Collection[str], *, timeout: float = 2.0) -> int:
    """:func:`restore_unacked` on the broker of ``broker_url`` through a client of its own that
    gives up after ``timeout`` s per command and does not retry; 0 at once, without connecting,
    when the broker is not Redis.

    Raises:
        redis.RedisError: Redis cannot be reached or answered with an error (some messages may
            have been restored, each whole).
        ValueError: the URL is a Redis URL redis-py cannot read.
    """
    url = redis_url(broker_url)
    if url is None or not queues:
        return 0
    client = Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
    try:
        return restore_unacked(client, queues)
    finally:
        client.close()


def bucket_restorer(broker_url: str, cluster: str) -> Callable[[Collection[int]], int]:
    """What :class:`~allot.work.leases.BucketWork` calls with the buckets it has just fenced:
    :func:`restore_on_broker` on the bucket queues of ``cluster`` (same return and errors)."""

    def restore(buckets: Collection[int]) -> int:
        return restore_on_broker(broker_url, {bucket_queue(cluster, b) for b in buckets})

    return restore


def restore_unacked(
    client: Redis, queues: Collection[str], *, batch: int = 500, mutex_wait: float = 5.0
) -> int:
    """Move every unacknowledged message of ``queues`` back to its queue; return how many were
    moved. A message is one of a queue's when its routing key is the queue's name (Celery's
    queues: the bucket queues) and kombu would route it to none but ``queues``.

    Call it only while no live consumer takes from ``queues`` (the new holder, after writing the
    fence and before consuming): it cannot tell a dead holder's delivery from a live one's.
    Safe to repeat: a second call finds nothing more. Waits at most ``mutex_wait`` s per batch
    for kombu's ``unacked_mutex``; past that it goes on without it, which is still safe (each
    message moves in its own watched transaction).

    Raises:
        redis.RedisError: Redis cannot be reached or answered with an error (the messages moved
            until then stay moved, each whole).
    """
    wanted = frozenset(queues)
    if not wanted:
        return 0
    moved = 0
    seen: set[str] = set()
    bindings: dict[str, list[tuple[str, str]]] = {}
    cursor = 0
    while True:
        cursor, found = client.hscan(Channel.unacked_key, cursor, count=batch)
        assert isinstance(found, dict)  # field and value pairs (HSCAN without NOVALUES)
        tags = [_text(tag) for tag, raw in found.items() if _routing_key(raw) in wanted]
        if tags:
            with _unacked_mutex(client, mutex_wait):
                for tag in tags:
                    if tag not in seen:  # HSCAN may return an entry twice
                        seen.add(tag)
                        moved += _restore(client, tag, wanted, bindings)
        if cursor == 0:
            return moved


def _restore(
    client: Redis, tag: str, wanted: frozenset[str], bindings: dict[str, list[tuple[str, str]]]
) -> int:
    """Move the message of ``tag`` back, as kombu's ``QoS.restore_by_tag`` does, if all the
    queues it is routed to are ``wanted``: 1 if this call moved it, 0 if not (gone already,
    routed elsewhere)."""

    moved = 0

    def transaction(pipe: Pipeline) -> None:
        nonlocal moved
        moved = 0  # the transaction runs again when the hash changed under it
        raw = pipe.hget(Channel.unacked_key, tag)  # immediate: the hash is watched
        entry = _entry(raw)
        if entry is None:
            return  # acknowledged or restored by someone else
        message, exchange, routing_key = entry
        targets = _destinations(pipe, exchange, routing_key, bindings)
        if not targets or not targets <= wanted:
            return  # not only the wanted queues: left to kombu's sweeper
        _mark_redelivered(message)
        pipe.multi()
        pipe.zrem(Channel.unacked_index_key, tag)
        pipe.hdel(Channel.unacked_key, tag)
        for queue in sorted(targets):
            pipe.rpush(_priority_list(queue, message), _dumps(message))
        moved = 1

    client.transaction(transaction, Channel.unacked_key)
    return moved


def _destinations(
    pipe: Pipeline, exchange: str, routing_key: str, bindings: dict[str, list[tuple[str, str]]]
) -> frozenset[str]:
    """The queues kombu's ``Channel._lookup`` routes ``routing_key`` to through the direct
    exchange ``exchange`` (the anonymous exchange: the queue named by the routing key)."""
    if not exchange:
        return frozenset({routing_key})
    if exchange not in bindings:
        members = pipe.smembers(Channel.keyprefix_queue % exchange)
        table = [_text(member).split(Channel.sep) for member in members]
        bindings[exchange] = [(row[0], row[2]) for row in table if len(row) == 3]
    return frozenset(queue for key, queue in bindings[exchange] if key == routing_key)


def _mark_redelivered(message: dict[str, Any]) -> None:
    """What kombu's ``Channel._do_restore_message`` changes in a message it puts back, and a new
    delivery tag (see the module docstring)."""
    try:
        message["headers"]["redelivered"] = True
        message["properties"]["delivery_info"]["redelivered"] = True
    except (KeyError, TypeError):
        pass
    properties = message.get("properties")
    if isinstance(properties, dict) and "delivery_tag" in properties:
        properties["delivery_tag"] = str(uuid.uuid4())


def _priority_list(queue: str, message: dict[str, Any]) -> str:
    """The Redis list of ``queue`` holding messages of ``message``'s priority (kombu's
    ``_get_message_priority`` and ``_q_for_pri``, default priority steps)."""
    low, high = virtual.Channel.min_priority, virtual.Channel.max_priority
    try:
        priority = max(min(int(message["properties"]["priority"]), high), low)
    except (TypeError, ValueError, KeyError):
        priority = virtual.Channel.default_priority
    steps = Channel.priority_steps
    step = steps[bisect(steps, priority) - 1]
    return f"{queue}{Channel.sep}{step}" if step else queue


@contextmanager
def _unacked_mutex(client: Redis, wait: float) -> Iterator[None]:
    """Hold kombu's ``unacked_mutex`` (waiting at most ``wait`` s), or go on without it."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with Mutex(client, Channel.unacked_mutex_key, Channel.unacked_mutex_expire):
                yield
            return
        except MutexHeld:
            if time.monotonic() >= deadline:
                logger.info("kombu's unacked_mutex is held: restoring without it")
                yield
                return
            time.sleep(0.05)


def _entry(raw: bytes | str | None) -> Entry | None:
    """An ``unacked`` entry read back, None when absent or not one kombu wrote."""
    if raw is None:
        return None
    try:
        message, exchange, routing_key = _loads(_text(raw))
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    return message, str(exchange or ""), str(routing_key or "")


def _routing_key(raw: bytes | str) -> str | None:
    """The routing key of an ``unacked`` entry (a bucket queue's name), None if unreadable."""
    entry = _entry(raw)
    return None if entry is None else entry[2]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
