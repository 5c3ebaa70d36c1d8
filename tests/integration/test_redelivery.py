"""allot.work.redelivery on a real redis-server with real kombu: a killed consumer's taken,
unacknowledged messages go back to their own queue at once, once, and only theirs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import kombu.connection
import kombu.entity
import kombu.messaging
import pytest
from kombu.transport.redis import Channel
from redis import Redis

from allot.testing.servers import ServerProcess
from allot.work.queues import bucket_queue
from allot.work.redelivery import restore_on_broker, restore_unacked

# kombu ships no type hints
Connection: Callable[..., Any] = kombu.connection.Connection
Exchange: Callable[..., Any] = kombu.entity.Exchange
Queue: Callable[..., Any] = kombu.entity.Queue
Producer: Callable[..., Any] = kombu.messaging.Producer

DB = 9
"""The redis database of these tests, emptied before each: kombu's ``unacked`` hash is one per
database, and the kombu sweeper started here restores whatever it holds."""

TAKE = """
import sys
from kombu import Connection
url, queue, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Connection(url, transport_options={"visibility_timeout": 3600}) as connection:
    simple = connection.SimpleQueue(queue, no_ack=False)
    for _ in range(count):
        simple.get(timeout=10)  # taken, never acknowledged
    print("taken", flush=True)
    sys.stdin.read()  # held until killed
"""


@dataclass(frozen=True)
class Sent:
    queue: str
    task_id: str
    body: dict[str, object]


@pytest.fixture
def url(redis_server: ServerProcess) -> str:
    return f"redis://{redis_server.host}:{redis_server.port}/{DB}"


@pytest.fixture
def redis(url: str) -> Iterator[Redis]:
    client = Redis.from_url(url, socket_timeout=10)
    client.flushdb()
    yield client
    client.close()


def send(url: str, queue: str, count: int, priority: int = 0) -> list[Sent]:
    """Publish ``count`` messages to ``queue`` as Celery does: a direct exchange named after the
    queue, the task id in the headers."""
    sent = []
    exchange = Exchange(queue, type="direct")
    with Connection(url) as connection:
        producer = Producer(connection)
        for index in range(count):
            task_id = str(uuid.uuid4())
            body: dict[str, object] = {"queue": queue, "index": index}
            producer.publish(
                body,
                exchange=exchange,
                routing_key=queue,
                declare=[Queue(queue, exchange, routing_key=queue)],
                headers={"id": task_id, "task": "bench.noop"},
                priority=priority,
                serializer="json",
            )
            sent.append(Sent(queue, task_id, body))
    return sent


def take_and_kill(url: str, queue: str, count: int) -> None:
    """A consumer process takes ``count`` messages of ``queue`` without acknowledging them and
    is killed with SIGKILL (no kombu shutdown restore runs)."""
    process = subprocess.Popen(
        [sys.executable, "-c", TAKE, url, queue, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"taken"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert process.stdin is not None
        process.stdin.close()
        assert process.stdout is not None
        process.stdout.close()


def unacked(redis: Redis) -> dict[str, str]:
    """The task id of each ``unacked`` entry, by routing key: ``{task_id: routing_key}``."""
    entries = redis.hgetall(Channel.unacked_key)
    found = {}
    for raw in entries.values():
        message, _, routing_key = json.loads(raw)
        found[message["headers"]["id"]] = routing_key
    return found


def drain(url: str, queue: str) -> list[tuple[str, dict[str, object], bool]]:
    """Take and acknowledge every message waiting in ``queue``: (task id, body, redelivered)."""
    got: list[tuple[str, dict[str, object], bool]] = []
    with Connection(url) as connection:
        simple = connection.SimpleQueue(queue, no_ack=False)
        while True:
            try:
                message = simple.get(timeout=0.5)
            except simple.Empty:
                return got
            got.append(
                (
                    message.headers["id"],
                    message.payload,
                    bool(message.delivery_info.get("redelivered")),
                )
            )
            message.ack()


@pytest.fixture
def cluster() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def test_restores_exactly_the_dead_consumers_messages_of_the_given_queue(
    url: str, redis: Redis, cluster: str
) -> None:
    # Given two bucket queues, each with messages a killed consumer took and never acknowledged
    first, second = bucket_queue(cluster, 1), bucket_queue(cluster, 2)
    sent_first = send(url, first, 5)
    sent_second = send(url, second, 4)
    take_and_kill(url, first, 3)
    take_and_kill(url, second, 2)
    taken_first = {sent.task_id for sent in sent_first[:3]}
    taken_second = {sent.task_id for sent in sent_second[:2]}
    assert unacked(redis) == {
        **dict.fromkeys(taken_first, first),
        **dict.fromkeys(taken_second, second),
    }
    assert redis.llen(first) == 2
    assert redis.llen(second) == 2

    # When the first queue's unacknowledged messages are restored
    restored = restore_unacked(redis, {first})

    # Then exactly its three come back, with the same body and task id, marked redelivered
    assert restored == 3
    assert unacked(redis) == dict.fromkeys(taken_second, second)
    assert redis.zcard(Channel.unacked_index_key) == 2
    got = drain(url, first)
    assert sorted((task_id, json.dumps(body)) for task_id, body, _ in got) == sorted(
        (sent.task_id, json.dumps(sent.body)) for sent in sent_first
    )
    assert {task_id for task_id, _, redelivered in got if redelivered} == taken_first
    # and a second call restores nothing more
    assert restore_unacked(redis, {first}) == 0
    assert unacked(redis) == dict.fromkeys(taken_second, second)


def test_a_message_goes_back_to_the_list_of_its_priority(
    url: str, redis: Redis, cluster: str
) -> None:
    # Given a message sent with priority 5, taken and never acknowledged
    queue = bucket_queue(cluster, 3)
    (sent,) = send(url, queue, 1, priority=5)
    priority_list = f"{queue}{Channel.sep}3"  # kombu's step for 5
    take_and_kill(url, queue, 1)
    assert redis.llen(priority_list) == 0

    # When it is restored
    assert restore_unacked(redis, {queue}) == 1

    # Then it is back in its priority list, as kombu's restore would put it
    assert redis.llen(priority_list) == 1
    assert redis.llen(queue) == 0
    assert [task_id for task_id, _, _ in drain(url, queue)] == [sent.task_id]


def test_kombu_restoring_the_same_messages_first_duplicates_nothing(
    url: str, redis: Redis, cluster: str
) -> None:
    # Given messages taken by a killed consumer
    queue = bucket_queue(cluster, 4)
    sent = send(url, queue, 6)
    take_and_kill(url, queue, 6)

    # When kombu's own restore moves each of them between this scan and this restore's
    # transaction (a client whose HSCAN lets kombu's sweeper run first)
    with Connection(url, transport_options={"visibility_timeout": 0}) as connection:
        qos = connection.default_channel.qos

        class KombuFirst(Redis):
            def hscan(self, *args: Any, **kwargs: Any) -> Any:
                found = super().hscan(*args, **kwargs)
                for tag in found[1]:
                    qos.restore_by_tag(tag)
                return found

        racing = KombuFirst.from_url(url)
        restored = restore_unacked(racing, {queue})
        racing.close()

    # Then this restore moved none, and each message is in the queue once
    assert restored == 0
    assert redis.hlen(Channel.unacked_key) == 0
    assert sorted(task_id for task_id, _, _ in drain(url, queue)) == sorted(s.task_id for s in sent)


def test_a_restore_racing_kombus_restore_moves_each_message_once(
    url: str, redis: Redis, cluster: str
) -> None:
    # Given many messages taken by a killed consumer
    queue = bucket_queue(cluster, 5)
    sent = send(url, queue, 200)
    take_and_kill(url, queue, 200)
    tags = list(redis.hkeys(Channel.unacked_key))
    assert len(tags) == 200

    # When kombu restores them one by one (``QoS.restore_by_tag``, as its sweeper and a
    # worker's shutdown do, without the mutex) while this restore, in small batches, runs
    with Connection(url, transport_options={"visibility_timeout": 0}) as connection:
        qos = connection.default_channel.qos
        kombu = threading.Thread(target=lambda: [qos.restore_by_tag(tag) for tag in tags])
        kombu.start()
        ours = restore_unacked(redis, {queue}, batch=10)
        kombu.join()

    # Then every message is in the queue exactly once, and nothing is left unacknowledged
    assert redis.hlen(Channel.unacked_key) == 0
    assert redis.zcard(Channel.unacked_index_key) == 0
    got = sorted(task_id for task_id, _, _ in drain(url, queue))
    assert got == sorted(s.task_id for s in sent)
    assert 0 <= ours <= 200


def test_a_restore_waits_for_kombus_sweeper(url: str, redis: Redis, cluster: str) -> None:
    # Given a message taken by a killed consumer, and kombu's sweeper holding its mutex
    queue = bucket_queue(cluster, 7)
    (sent,) = send(url, queue, 1)
    take_and_kill(url, queue, 1)
    sweeper = redis.lock(Channel.unacked_mutex_key, timeout=60, thread_local=False)
    assert sweeper.acquire(blocking=False)
    released = threading.Timer(0.3, sweeper.release)
    released.start()

    # When restoring, Then the restore waits for the sweeper and moves the message
    assert restore_unacked(redis, {queue}, mutex_wait=120) == 1
    released.join()
    assert [task_id for task_id, _, _ in drain(url, queue)] == [sent.task_id]
    # and a sweeper that never lets go (a dead holder's lock) only delays a restore
    take_again = send(url, queue, 1)
    take_and_kill(url, queue, 1)
    stuck = redis.lock(Channel.unacked_mutex_key, timeout=60, thread_local=False)
    assert stuck.acquire(blocking=False)
    assert restore_unacked(redis, {queue}, mutex_wait=0.2) == 1
    assert [task_id for task_id, _, _ in drain(url, queue)] == [take_again[0].task_id]
    stuck.release()


def test_the_dead_holders_late_ack_leaves_the_new_delivery_alone(
    url: str, redis: Redis, cluster: str
) -> None:
    # Given a message a killed (or frozen) consumer took, restored and taken again by the new
    # holder, which dies too
    queue = bucket_queue(cluster, 8)
    (sent,) = send(url, queue, 1)
    take_and_kill(url, queue, 1)
    (old_tag,) = redis.hkeys(Channel.unacked_key)
    assert restore_unacked(redis, {queue}) == 1
    take_and_kill(url, queue, 1)

    # When the first holder wakes up and acknowledges its own delivery, as kombu acks
    ack = redis.pipeline()
    ack.zrem(Channel.unacked_index_key, old_tag)
    ack.hdel(Channel.unacked_key, old_tag)
    ack.execute()

    # Then the new holder's delivery is still unacknowledged, so it can still be restored
    assert unacked(redis) == {sent.task_id: queue}
    assert restore_unacked(redis, {queue}) == 1
    assert [task_id for task_id, _, _ in drain(url, queue)] == [sent.task_id]


def test_restore_on_broker_restores_through_the_broker_url(
    url: str, redis: Redis, cluster: str
) -> None:
    # Given a message taken by a killed consumer
    queue = bucket_queue(cluster, 6)
    (sent,) = send(url, queue, 1)
    take_and_kill(url, queue, 1)

    # When restoring by the broker URL, Then it is back
    assert restore_on_broker(url, {queue}) == 1
    assert [task_id for task_id, _, _ in drain(url, queue)] == [sent.task_id]
