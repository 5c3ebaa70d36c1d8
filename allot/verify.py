"""The invariants, checked against the live cluster (``allot verify``).

:func:`violations` is pure: it takes what :func:`read_facts` read (ZooKeeper through
:func:`allot.observe.observe`, the ``bucket`` and ``plan`` rows, the lease znodes, whether the
assignment lock is held) and returns every broken invariant:

1. ``one-owner``: every bucket ``1..N`` is listed by exactly one node in ZooKeeper, every id is
   in range and every entry is readable (a bucket nobody holds counts only while a live node
   could hold it);
2. ``owner-state``: every owner is live or suspect (inside its grace period);
3. ``sql-agrees``: ``bucket.node_key`` names the ZooKeeper owner of every bucket and SQL mirrors
   the epoch of ``assignment-version``;
4. ``lease-owner``: every lease ``{root}/leases/{bucket}`` names the bucket's owner (none exist
   before table work runs: nothing to check);
5. ``stuck-plan``: no plan is ``applying`` while nobody holds the assignment lock.

Children of ``nodes/`` that are not allot's are notes, not violations.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from allot import mirror, plans
from allot.errors import DatabaseUnavailable
from allot.observe import Observation, observe
from allot.repair import format_ids
from allot.settings import Settings
from allot.zk.lock import AssignmentLock
from allot.zk.paths import ZkPaths
from models.base import utcnow
from models.schema import Bucket
from models.states import PlanStatus


@dataclass(frozen=True)
class Violation:
    """One broken invariant: which ``check`` and what exactly."""

    check: str
    detail: str


@dataclass(frozen=True)
class Facts:
    """What :func:`violations` judges."""

    seen: Observation
    bucket_count: int
    sql_owners: Mapping[int, str | None]
    sql_epoch: int
    leases: Mapping[int, str] = field(default_factory=dict)
    applying: Sequence[str] = ()
    lock_held: bool = False


def violations(facts: Facts) -> list[Violation]:
    """Every invariant ``facts`` break (module docstring), in check order."""
    seen, count = facts.seen, facts.bucket_count
    found: list[Violation] = []
    stored = seen.snapshot.buckets_by_node()
    owners: dict[int, list[str]] = {}
    for key, buckets in sorted(stored.items()):
        for bucket in buckets:
            if not 1 <= bucket <= count:
                found.append(
                    Violation("one-owner", f"{key} lists bucket {bucket}, not in 1..{count}")
                )
            else:
                owners.setdefault(bucket, []).append(key)
    for key, reason in sorted(seen.snapshot.corrupt.items()):
        found.append(Violation("one-owner", f"the entry of {key} is unreadable: {reason}"))
    for bucket, keys in sorted(owners.items()):
        if len(keys) > 1:
            found.append(Violation("one-owner", f"bucket {bucket} is listed by {', '.join(keys)}"))
    unowned = [b for b in range(1, count + 1) if b not in owners]
    if unowned and seen.classes.live:
        found.append(
            Violation("one-owner", f"{len(unowned)} bucket(s) have no owner: {format_ids(unowned)}")
        )
    for key in sorted(stored):
        if stored[key] and key not in seen.classes.live and key not in seen.classes.suspect:
            found.append(
                Violation("owner-state", f"{key} holds {len(stored[key])} bucket(s) but is offline")
            )
    zk_owner = {bucket: keys[0] for bucket, keys in owners.items()}
    differ = [b for b in range(1, count + 1) if facts.sql_owners.get(b) != zk_owner.get(b)]
    if differ:
        found.append(
            Violation(
                "sql-agrees", f"SQL names another owner than ZooKeeper for {format_ids(differ)}"
            )
        )
    epoch = seen.snapshot.version.epoch
    if facts.sql_epoch != epoch:
        found.append(
            Violation("sql-agrees", f"SQL mirrors epoch {facts.sql_epoch}, ZooKeeper is at {epoch}")
        )
    for bucket, holder in sorted(facts.leases.items()):
        if zk_owner.get(bucket) != holder:
            owner = zk_owner.get(bucket) or "nobody"
            found.append(
                Violation(
                    "lease-owner", f"the lease of bucket {bucket} names {holder}, owner {owner}"
                )
            )
    if facts.applying and not facts.lock_held:
        found.append(
            Violation("stuck-plan", f"plan(s) {', '.join(facts.applying)} applying, lock free")
        )
    return found


def read_facts(client: KazooClient, sessions: sessionmaker[Session], settings: Settings) -> Facts:
    """Read what :func:`violations` needs from ZooKeeper and SQL.

    Raises:
        kazoo.exceptions.KazooException: ZooKeeper could not be read.
        sqlalchemy.exc.SQLAlchemyError: SQL could not be read.
    """
    paths = ZkPaths(settings.zk_root)
    seen = observe(
        client, paths, sessions, now=utcnow(), offline_timeout=settings.node_offline_timeout,
        bucket_count=settings.bucket_count,
    )  # fmt: skip
    if seen.sql_problem is not None:
        raise DatabaseUnavailable(f"cannot read SQL: {seen.sql_problem}")
    with sessions() as session:
        sql_owners = dict(session.execute(select(Bucket.bucket_id, Bucket.node_key)).all())
        sql_epoch = mirror.mirrored_epoch(session)
        applying = [row.plan_id for row in plans.plans_in_status(session, PlanStatus.APPLYING)]
    lock_held = bool(AssignmentLock(client, paths).contenders()) if applying else False
    return Facts(
        seen, settings.bucket_count, sql_owners, sql_epoch, _leases(client, paths), applying,
        lock_held,
    )  # fmt: skip


def _leases(client: KazooClient, paths: ZkPaths) -> dict[int, str]:
    parent = f"{paths.root}/leases"
    try:
        children = client.get_children(parent)
    except NoNodeError:
        return {}
    leases: dict[int, str] = {}
    for child in children:
        if not child.isdigit():
            continue
        try:
            data, _ = client.get(f"{parent}/{child}")
            holder = json.loads(data).get("node_key")
        except (NoNodeError, ValueError, AttributeError):
            continue
        if isinstance(holder, str):
            leases[int(child)] = holder
    return leases
