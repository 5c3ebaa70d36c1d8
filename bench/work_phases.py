"""The three measurements of bench/work.py, each on a running local cluster.

- :func:`throughput`: a batch of table tasks or of plain tasks sent as fast as this process
  can; the rate is the runs written after the last send over the time from the last send to
  the last run (the queues are never empty in that window, and the sender no longer competes
  for the CPU).
- :func:`handoff`: a fourth worker joins while the assignment lock is held by this process,
  so that the donors can be made busy first; then a cycle run here moves buckets to it. Per
  donor, one moved bucket is *busy* (its donor is running a ``busy_seconds`` task of it at
  the plan's commit, and one more message waits behind it) and one is *idle* (one message
  waits, nothing runs). Latency: from the plan's commit (the ZooKeeper ``mtime`` of
  ``assignment-version``) to the start of the bucket's first attempt on the new node
  (``table_task_run.started_at``).
- :func:`kill`: ``kill -9`` of a worker while tasks keep coming, one bucket after the other,
  at a moment it is running one of them; from the kill to each of its buckets' first attempt
  on a new owner; then every message sent must commit once. The messages the dead worker had
  taken (running and reserved: the entries of kombu's ``unacked`` hash whose routing key is a
  queue of its buckets, read just before the kill) are given back by their buckets' new owners
  when they take the buckets; per message, from the kill to its committed attempt's end.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from kombu.transport.redis import Channel
from redis import Redis
from sqlalchemy import Engine

from allot.cycle import AssignmentCycle
from allot.planner import NodeInfo, Snapshot, plan
from allot.testing.cluster import LocalCluster, moved
from allot.work.queues import bucket_queue
from allot.zk.lock import AssignmentLock
from allot.zk.paths import ZkPaths
from bench.work_cluster import (
    RunRow,
    Sent,
    attempts,
    committed_ids,
    cpu_seconds,
    effect_count,
    effect_times,
    handoff_steps,
    last_attempt,
    sending,
    served,
)
from bench.work_tasks import STARTED_LOG
from models.engine import session_factory
from models.states import RunStatus


@dataclass
class Rate:
    """One kind of task over its batches: the runs written in the windows after each batch's
    last send and those windows' length; how fast the batches were sent."""

    runs: int = 0
    """Runs written after their batch's last send."""
    seconds: float = 0.0
    """From each batch's last send to its last run, summed."""
    sent: int = 0
    send_seconds: float = 0.0
    backlog: list[int] = field(default_factory=list)
    """Runs still to do when each batch's last message was sent."""
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds used in the windows (:func:`~bench.work_cluster.cpu_seconds`)."""

    @property
    def per_second(self) -> float:
        return self.runs / self.seconds if self.seconds else 0.0


def throughput(
    cluster: LocalCluster, sent: Sent, tables: dict[int, list[str]], kind: str, count: int,
    rate: Rate,
) -> None:  # fmt: skip
    """Send ``count`` tasks of ``kind`` (``table``, ``plain`` or ``late``), wait for their rows,
    and add the batch to ``rate``."""
    engine, buckets = cluster.engine, sorted(tables)
    before = effect_count(engine, kind)
    started = time.time()
    for index in range(count):
        if kind == "table":
            sent.table(tables, buckets[index % len(buckets)])
        else:
            sent.plain(kind)
    last_sent, cpu_before = time.time(), cpu_seconds(cluster)
    backlog = before + count - effect_count(engine, kind)
    cluster.wait_for(
        lambda: effect_count(engine, kind) >= before + count,
        f"{count} {kind} runs",
        timeout=60 + count / 10,
        interval=0.1,
    )
    for part, used in cpu_seconds(cluster).items():
        rate.cpu[part] = rate.cpu.get(part, 0.0) + used - cpu_before[part]
    times = effect_times(engine, kind, started)
    rate.runs += sum(1 for at in times if at > last_sent)
    rate.seconds += max(times[-1] - last_sent, 0.0)
    rate.sent += count
    rate.send_seconds += last_sent - started
    rate.backlog.append(backlog)


# -- (b) handoff -----------------------------------------------------------------------------


@dataclass
class Handoff:
    idle: list[float] = field(default_factory=list)
    """Plan commit -> first attempt of an idle moved bucket on the new node (s)."""
    busy: list[float] = field(default_factory=list)
    """Plan commit -> first attempt of a busy moved bucket on the new node (s)."""
    busy_left: list[float] = field(default_factory=list)
    """How long the donor's busy task still ran after the plan's commit (s)."""
    after_busy: list[float] = field(default_factory=list)
    """End of the donor's busy task -> first attempt on the new node (s)."""
    steps: dict[str, list[float]] = field(default_factory=dict)
    """Plan commit -> each step of an idle bucket's handoff, from the workers' logs (s)."""
    notes: list[str] = field(default_factory=list)


def plan_commit_time(cluster: LocalCluster) -> tuple[int, float]:
    """The assignment's epoch and when ZooKeeper committed it (the version znode's mtime)."""
    stat = cluster.client.exists(ZkPaths(cluster.settings.zk_root).assignment_version)
    assert stat is not None
    return cluster.epoch(), stat.mtime / 1000


def handoff(
    cluster: LocalCluster, sent: Sent, tables: dict[int, list[str]], busy_seconds: float,
    result: Handoff, newcomer: str = "node4",
) -> None:  # fmt: skip
    """One trial: ``newcomer`` joins, buckets move to it; see the module docstring."""
    engine = cluster.engine
    before = served(cluster)
    assert before is not None, "the cluster must be serving every bucket before a trial"
    key = cluster.key(newcomer)
    nodes = {node: NodeInfo() for node in [*before, key]}
    moves = plan(Snapshot(cluster.settings.bucket_count, nodes, before)).moves
    by_donor: dict[str, list[int]] = {}
    for move in moves:
        assert move.source is not None
        by_donor.setdefault(move.source, []).append(move.bucket)
    assert all(len(b) >= 2 for b in by_donor.values()), f"too few moves to measure: {moves}"
    lock = AssignmentLock(cluster.client, ZkPaths(cluster.settings.zk_root), "bench")
    assert lock.acquire(30) is not None, "could not take the assignment lock"
    try:
        process = cluster.worker(newcomer)
        cluster.wait_for(lambda: key in cluster_members(cluster), f"{newcomer} to join", 60)
        long_runs = {donor: sent.table(tables, b[0], busy_seconds) for donor, b in by_donor.items()}
        cluster.wait_for(
            lambda: all(running_on(cluster, run) == d for d, run in long_runs.items()),
            "every donor running its busy task",
            30,
            interval=0.02,
        )
        behind = {b[0]: sent.table(tables, b[0]) for b in by_donor.values()}
        idle = {b[1]: sent.table(tables, b[1]) for b in by_donor.values()}
    finally:
        lock.release()
    epoch = cluster.epoch()
    AssignmentCycle(cluster.client, session_factory(engine), cluster.settings).run(
        "bench", lock_timeout=30
    )
    waiting = set(behind.values()) | set(idle.values())
    cluster.wait_for(lambda: waiting <= committed_ids(engine), "the moved buckets' runs", 60)
    new_epoch, committed_at = plan_commit_time(cluster)
    after = cluster.zk()
    if new_epoch != epoch + 1 or moved(before, after) != {m.bucket for m in moves}:
        result.notes.append(
            f"trial moved {sorted(moved(before, after))} in epochs {epoch}->{new_epoch}, "
            f"predicted {sorted(m.bucket for m in moves)}"
        )
    for runs, times in ((idle, result.idle), (behind, result.busy)):
        for run in runs.values():
            first = attempts(engine, run_id=run)[0]
            if first.node_key != key:
                result.notes.append(f"run {run} of bucket {first.bucket_id} ran on the donor")
                continue
            times.append(first.started - committed_at)
    logged = handoff_steps(cluster, set(idle), committed_at - 0.01)
    for step, at in logged.items():
        result.steps.setdefault(step, []).extend(t - committed_at for t in at.values())
    for donor, run in long_runs.items():
        finished = committed(engine, run).finished
        assert finished is not None
        result.busy_left.append(finished - committed_at)
        bucket = by_donor[donor][0]
        result.after_busy.append(committed(engine, behind[bucket]).started - finished)
    process.stop()
    cluster.wait_for(
        lambda: (zk := served(cluster)) is not None and key not in zk,
        f"{newcomer} to leave",
        60,
    )


def cluster_members(cluster: LocalCluster) -> list[str]:
    children: list[str] = cluster.client.get_children(ZkPaths(cluster.settings.zk_root).nodes)
    return children


def started(cluster: LocalCluster) -> list[tuple[str, str]]:
    """``(run_id, node_key)`` of each start of a run that works a while, oldest first
    (:data:`~bench.work_tasks.STARTED_LOG`)."""
    log = Path(cluster.env[STARTED_LOG])
    lines = log.read_text().splitlines() if log.exists() else []
    return [(run, node) for run, node in (line.split() for line in lines)]


def running_on(cluster: LocalCluster, run_id: str) -> str | None:
    """The node that started ``run_id`` last, if any."""
    nodes = [node for run, node in started(cluster) if run == run_id]
    return nodes[-1] if nodes else None


def committed(engine: Engine, run_id: str) -> RunRow:
    """The committed attempt of ``run_id``."""
    (row,) = attempts(engine, run_id=run_id, status=RunStatus.COMMITTED)
    return row


# -- (c) kill -9 -----------------------------------------------------------------------------


@dataclass
class Kill:
    victim: str = ""
    buckets: int = 0
    back: list[float] = field(default_factory=list)
    """Kill -> first attempt on a new owner, per bucket of the dead node (s)."""
    reassigned: list[float] = field(default_factory=list)
    """Kill -> the assignment that moved its buckets committed in ZooKeeper (s)."""
    sent: int = 0
    lost: int = 0
    redelivered: list[float] = field(default_factory=list)
    """Kill -> the next attempt of each run the dead node was running, on another node (s)."""
    taken: list[float] = field(default_factory=list)
    """Kill -> the committed attempt's end, per message the dead node had taken (s)."""
    taken_lost: int = 0
    """Messages the dead node had taken that never committed."""
    waited: float = 0.0


def kill(
    cluster: LocalCluster, sent: Sent, tables: dict[int, list[str]], rate: float, victim: str,
    result: Kill, settle: float = 2.0,
) -> None:  # fmt: skip
    """Kill ``victim`` while sending at ``rate``; see the module docstring."""
    engine, key = cluster.engine, cluster.key(victim)
    assignment = served(cluster)
    assert assignment is not None
    assert key in assignment
    dead = set(assignment[key])
    result.victim, result.buckets = key, len(dead)
    before_kill = sent.table_ids()
    with sending(sent, tables, rate):
        time.sleep(settle)
        # kill it mid-run: a message it has taken must come back after the redelivery timeout
        in_flight = sent.table(tables, min(dead), seconds=settle)
        cluster.wait_for(lambda: running_on(cluster, in_flight) == key, "a run on it", 30, 0.02)
        mark = last_attempt(engine)
        taken = taken_messages(cluster, dead)
        killed_at = time.time()
        cluster.processes[victim].kill()

        def all_back() -> dict[int, RunRow] | None:
            first: dict[int, RunRow] = {}
            for row in attempts(engine, after=mark):
                if row.bucket_id in dead and row.node_key != key:
                    first.setdefault(row.bucket_id, row)
            return first if len(first) == len(dead) else None

        firsts = cluster.wait_for(all_back, f"{victim}'s buckets worked again", 120, 0.05)
        time.sleep(settle)
    result.back = sorted(row.started - killed_at for row in firsts.values())
    result.reassigned.append(plan_commit_time(cluster)[1] - killed_at)
    ids = sent.table_ids()
    result.sent = len(ids - before_kill)
    timeout = cluster.settings.redelivery_timeout
    deadline = killed_at + timeout * 1.2 + 15
    while not ids <= committed_ids(engine) and time.time() < deadline:
        time.sleep(0.5)
    result.waited = time.time() - killed_at
    result.lost = len(ids - committed_ids(engine))
    for task_id in sorted(taken):
        rows = attempts(engine, run_id=task_id, status=RunStatus.COMMITTED)
        if rows and rows[0].finished is not None:
            result.taken.append(rows[0].finished - killed_at)
        else:
            result.taken_lost += 1
    done = {row.run_id for row in attempts(engine, node_key=key) if row.finished is not None}
    abandoned = {run for run, node in started(cluster) if node == key} - done
    for run in abandoned:
        again = [row.started for row in attempts(engine, run_id=run) if row.node_key != key]
        if again:
            result.redelivered.append(again[0] - killed_at)


def taken_messages(cluster: LocalCluster, buckets: set[int]) -> set[str]:
    """The task ids (``headers["id"]``) of the messages taken and not acknowledged from the
    queues of ``buckets``: kombu's ``unacked`` hash read whole (HGETALL: a benchmark's few)."""
    queues = {bucket_queue(cluster.settings.cluster, bucket) for bucket in buckets}
    client = Redis.from_url(cluster.env["ALLOT_BROKER_URL"], socket_timeout=10)
    try:
        entries = client.hgetall(Channel.unacked_key)
    finally:
        client.close()
    found = set()
    for raw in entries.values():
        message, _, routing_key = json.loads(raw)
        if routing_key in queues:
            found.add(str(message["headers"]["id"]))
    return found


def summary(values: list[float]) -> tuple[str, str, str, str]:
    """``(n, median, min, max)`` formatted for a table row."""
    if not values:
        return ("0", "-", "-", "-")
    return (
        str(len(values)),
        f"{statistics.median(values):.2f}",
        f"{min(values):.2f}",
        f"{max(values):.2f}",
    )
