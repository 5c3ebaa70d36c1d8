"""The consumer heartbeat (allot.work.consumer.BucketQueues) that the step-aside probe asks.

The worker's consumer is a stand-in here: it queues ``call_soon`` callbacks for the test to run
as Celery's event loop would, and records the queues added and cancelled.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from allot.work.consumer import BucketQueues


class Loop:
    """A worker's consumer: ``call_soon`` queues, :meth:`run` runs what is queued, in order."""

    def __init__(self) -> None:
        self.soon: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.task_consumer = SimpleNamespace(queues=[])
        self.app = SimpleNamespace(
            conf={"allot_cluster": "t"},
            amqp=SimpleNamespace(queues=SimpleNamespace(consume_from={})),
        )
        self.on_add: Callable[[int], object] = lambda count: None

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        self.soon.append((callback, args))

    def add_task_queue(self, name: str) -> None:
        self.task_consumer.queues.append(SimpleNamespace(name=name))
        self.on_add(len(self.task_consumer.queues))

    def cancel_task_queue(self, name: str) -> None:
        self.task_consumer.queues = [q for q in self.task_consumer.queues if q.name != name]

    def run(self) -> None:
        while self.soon:
            callback, args = self.soon.pop(0)
            callback(*args)


def test_a_long_queue_switch_keeps_the_heartbeat_alive() -> None:
    # Given a consumer whose loop answered a first stamp, then starts consuming 2,000 queues
    loop = Loop()
    queues = BucketQueues(loop)
    queues.heartbeat()
    queues.serve(frozenset(range(1, 2001)))
    answers: list[bool] = []

    # When the step-aside probe asks twice while the loop is adding them (the second stamp it
    # asks for waits behind the switch)
    def probe(count: int) -> None:
        if count in (500, 1500):
            answers.append(queues.heartbeat())

    loop.on_add = probe
    loop.run()

    # Then both probes found the loop alive: adding queues is work, not a wedge
    assert answers == [True, True]
    assert queues.applied == queues.requested
    assert len(loop.task_consumer.queues) == 2000


def test_a_loop_that_runs_nothing_fails_the_heartbeat() -> None:
    # Given a consumer whose loop answered a first stamp
    loop = Loop()
    queues = BucketQueues(loop)
    queues.heartbeat()
    loop.run()
    assert queues.heartbeat()

    # When the loop runs nothing more (wedged), the stamp asked is never answered
    assert not queues.heartbeat()
    assert not queues.heartbeat()
