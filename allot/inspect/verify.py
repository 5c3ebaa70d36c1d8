"""``allot verify``'s read of the live cluster: the facts :func:`allot.inspect.invariants.evaluate`
judges (the checks are listed there).

:func:`read_facts` gathers the facts: ZooKeeper through :func:`allot.cycle.observe.observe`, then
SQL, the lock, the leases (:func:`allot.zk.leases.read_leases`). It writes nothing.

Failure modes of the read:
    SUSPENDED: every ZooKeeper read retries through ``client.retry`` until it gives up
    (``RetryFailedError``, a ``KazooException``, propagates). LOST: reads hold no ephemeral
    state; kazoo's new session answers them.
    Concurrent cycles: a read during which ``assignment-version`` or SQL's epoch moved is
    repeated (up to ``attempts`` times), so a cycle applying meanwhile is not reported as a
    disagreement; a plan counts as stuck only if it is ``applying`` both before and after the
    lock was seen free.
    Corrupt data: never raised; it is what the checks report.
"""

from __future__ import annotations

from dataclasses import dataclass

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from sqlalchemy.orm import Session, sessionmaker

from allot.cycle import mirror, plans
from allot.cycle.observe import Observation, observe
from allot.database import safe_url
from allot.errors import DatabaseUnavailable
from allot.inspect.invariants import Facts
from allot.settings import Settings
from allot.zk.leases import LeaseListing, read_leases
from allot.zk.lock import AssignmentLock
from allot.zk.paths import ZkPaths
from allot.zk.version import read_version
from models.base import utcnow
from models.states import PlanStatus


def read_facts(
    client: KazooClient, sessions: sessionmaker[Session], settings: Settings, *, attempts: int = 3
) -> Facts:
    """Read what :func:`evaluate` judges, from ZooKeeper and SQL (writes nothing).

    A read during which ``assignment-version`` or SQL's epoch moved (a cycle applied a plan
    meanwhile) is repeated, at most ``attempts`` times in all; the last one is returned.

    Raises:
        DatabaseUnavailable: SQL could not be read by :func:`allot.cycle.observe.observe`.
        AccessDenied: ZooKeeper refused reading the assignment.
        kazoo.exceptions.KazooException: ZooKeeper could not be read.
        sqlalchemy.exc.SQLAlchemyError: SQL could not be read.
    """
    paths = ZkPaths(settings.zk_root)
    for _ in range(max(attempts, 1) - 1):
        facts, settled = _read_once(client, sessions, settings, paths)
        if settled:
            return facts
    return _read_once(client, sessions, settings, paths)[0]


@dataclass(frozen=True)
class _SqlRead:
    owners: dict[int, str | None]
    epoch: int
    applying: list[str]
    settled: bool


def _read_once(
    client: KazooClient, sessions: sessionmaker[Session], settings: Settings, paths: ZkPaths
) -> tuple[Facts, bool]:
    """One read, and whether it settled (nothing it compares moved while it read)."""
    seen = observe(
        client,
        paths,
        sessions,
        now=utcnow(),
        offline_timeout=settings.node_offline_timeout,
        bucket_count=settings.bucket_count,
    )
    if seen.sql_problem is not None:
        raise DatabaseUnavailable(
            f"cannot use the database at {safe_url(settings.database_url)}: {seen.sql_problem}"
        )
    sql = before = _read_sql(sessions)
    lock_held = _lock_held(client, paths)
    if not lock_held:
        # read again now that the lock was seen free: a plan still applying was left behind
        # by a cycle that ended (one in flight holds the lock from before it records the plan
        # until after it finishes it), and a mirror in flight before has landed
        after = _read_sql(sessions)
        applying = [plan for plan in after.applying if plan in before.applying]
        sql = _SqlRead(after.owners, after.epoch, applying, after.settled)
    leases = client.retry(read_leases, client, paths)
    unchanged = read_version(client, paths).zversion == seen.snapshot.version.zversion
    return _facts(seen, settings, sql, leases, lock_held), sql.settled and unchanged


def _facts(
    seen: Observation,
    settings: Settings,
    sql: _SqlRead,
    leases: LeaseListing | None,
    lock_held: bool,
) -> Facts:
    snapshot = seen.snapshot
    version = snapshot.version
    return Facts(
        bucket_count=settings.bucket_count,
        stored=snapshot.buckets_by_node(),
        now=seen.now,
        live=frozenset(seen.members.live),
        departures=dict(seen.departures.times),
        grace=settings.node_offline_timeout,
        unreadable={**snapshot.invalid, **snapshot.corrupt},
        epoch=version.epoch,
        version_problem=version.problem,
        pending=version.pending,
        sql_owners=sql.owners,
        sql_epoch=sql.epoch,
        applying=sql.applying,
        leases=leases,
        lock_held=lock_held,
        ignored_members=seen.members.ignored(),
        departures_problem=seen.departures.problem,
    )


def _read_sql(sessions: sessionmaker[Session]) -> _SqlRead:
    """SQL's owners, epoch and applying plans; ``settled``: the epoch did not move meanwhile."""
    with sessions() as session:
        epoch = mirror.mirrored_epoch(session)
        owners = mirror.owners(session)
        applying = [row.plan_id for row in plans.plans_in_status(session, PlanStatus.APPLYING)]
        session.expire_all()
        settled = mirror.mirrored_epoch(session) == epoch
    return _SqlRead(owners, epoch, applying, settled)


def _lock_held(client: KazooClient, paths: ZkPaths) -> bool:
    """Whether anybody holds (or waits for) the assignment lock; creates nothing."""
    if client.retry(client.exists, paths.assign_lock) is None:
        return False
    try:
        return bool(client.retry(AssignmentLock(client, paths).contenders))
    except NoNodeError:
        return False
