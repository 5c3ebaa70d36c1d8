"""The invariants of a cluster, judged purely (``allot verify`` reads the facts: see
:mod:`allot.inspect.verify`).

:func:`evaluate` takes the :class:`Facts` one read of the cluster gathered and returns a
:class:`Verdict`, every broken invariant (a :class:`Violation` of one :class:`Check`) and the
notes worth showing:
1. ``one-owner``: every bucket ``1..N`` is listed by exactly one node in ZooKeeper: none under
   two nodes, no id out of range, no entry allot cannot read (corrupt data, a child name that
   is not a node key); a bucket nobody holds counts only while a live node could hold it;
2. ``owner-state``: every owner is live or suspect (gone, inside the grace period that started
   at its stored departure, ``{root}/departures``); an owner gone past its grace period, or
   gone with no stored departure (unknown: no cycle saw it leave), breaks it;
3. ``sql-agrees``: ``bucket.node_key`` names the ZooKeeper owner of every bucket and SQL
   mirrors the epoch of a readable ``assignment-version``
   (:func:`allot.cycle.mirror.mirrored_epoch`);
4. ``lease-owner``: every lease ``{root}/leases/{bucket}`` (as
   :func:`allot.zk.leases.read_leases` lists them) names the bucket's owner, or a live node
   handing the bucket over (a note: the donor keeps the lease until its running task ends); no
   ``leases`` znode, nothing to check;
5. ``stuck-plan``: no plan is ``applying`` and no apply in steps is ``pending`` in
   ``assignment-version`` while nobody holds the assignment lock.

What a cycle holding the lock is writing is in flight, not broken: SQL behind ZooKeeper, an
``applying`` plan, buckets between owners during an apply in steps are notes then. So are the
children of ``nodes/`` and ``leases/`` that are not allot's.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from allot.cycle.classify import Classification, classify
from allot.cycle.repair import format_ids
from allot.zk.leases import LeaseListing


class Check(enum.StrEnum):
    """The invariants, in the order they are checked (module docstring)."""

    ONE_OWNER = "one-owner"
    OWNER_STATE = "owner-state"
    SQL_AGREES = "sql-agrees"
    LEASE_OWNER = "lease-owner"
    STUCK_PLAN = "stuck-plan"


@dataclass(frozen=True)
class Violation:
    """One broken invariant: which ``check`` and what exactly, in one line."""

    check: Check
    detail: str


@dataclass(frozen=True)
class Facts:
    """What one read of the cluster found, as plain data (what :func:`evaluate` judges).

    ``stored``: every readable assignment entry's bucket ids as stored (not repaired);
    ``unreadable``: entries allot cannot read, with the reason; ``live``: the live node keys;
    ``departures``: the stored grace starts (epoch ms); ``now`` and ``grace`` (seconds): where
    grace periods are measured; ``epoch``, ``version_problem``, ``pending``: what
    ``assignment-version`` holds; ``sql_owners``, ``sql_epoch``, ``applying``: SQL's owners,
    mirrored epoch and the plans ``applying``; ``leases``: every child of ``{root}/leases``
    (None: no such znode); ``lock_held``: somebody holds or waits for the
    assignment lock; ``ignored_members``: children of ``nodes/`` that are not allot nodes;
    ``departures_problem``: why ``departures`` could not be read.
    """

    bucket_count: int
    stored: Mapping[str, Sequence[int]]
    now: dt.datetime
    live: Collection[str] = ()
    departures: Mapping[str, int] = field(default_factory=dict)
    grace: float = 30.0
    unreadable: Mapping[str, str] = field(default_factory=dict)
    epoch: int = 0
    version_problem: str | None = None
    pending: Mapping[str, Any] | None = None
    sql_owners: Mapping[int, str | None] = field(default_factory=dict)
    sql_epoch: int = 0
    applying: Sequence[str] = ()
    leases: LeaseListing | None = None
    lock_held: bool = False
    ignored_members: Mapping[str, str] = field(default_factory=dict)
    departures_problem: str | None = None


@dataclass(frozen=True)
class Verdict:
    """What :func:`evaluate` found: the ``violations`` (none: every invariant holds), the
    ``notes``, and for the summary the ``epoch``, ``bucket_count`` and the ``live`` and
    ``suspect`` nodes."""

    violations: tuple[Violation, ...]
    notes: tuple[str, ...]
    epoch: int
    bucket_count: int
    live: tuple[str, ...]
    suspect: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when every invariant holds."""
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        """The verdict as ``allot verify --format json`` prints it."""
        return {
            "ok": self.ok,
            "epoch": self.epoch,
            "bucket_count": self.bucket_count,
            "live": list(self.live),
            "suspect": list(self.suspect),
            "violations": [{"check": v.check.value, "detail": v.detail} for v in self.violations],
            "notes": list(self.notes),
        }


def evaluate(facts: Facts) -> Verdict:
    """Judge ``facts`` against every invariant (module docstring); pure."""
    notes = [f"ignored nodes/{name}: {why}" for name, why in sorted(facts.ignored_members.items())]
    if facts.departures_problem is not None:
        notes.append(f"departures is malformed ({facts.departures_problem}): grace periods restart")
    listers: dict[int, list[str]] = {}
    for key in sorted(facts.stored):
        for bucket in sorted(set(facts.stored[key])):
            if 1 <= bucket <= facts.bucket_count:
                listers.setdefault(bucket, []).append(key)
    classes = _classify_owners(facts)
    found = [
        *_one_owner(facts, listers, notes),
        *_owner_state(facts, classes),
        *_sql_agrees(facts, listers, notes),
        *_lease_owner(facts, listers, notes),
        *_stuck_plan(facts),
    ]
    suspect = sorted(set(classes.suspect) - set(classes.newly_departed))
    return Verdict(
        tuple(found),
        tuple(notes),
        facts.epoch,
        facts.bucket_count,
        tuple(sorted(facts.live)),
        tuple(suspect),
    )


def _one_owner(
    facts: Facts, listers: Mapping[int, list[str]], notes: list[str]
) -> Iterator[Violation]:
    count = facts.bucket_count
    for key in sorted(facts.stored):
        outside = sorted({b for b in facts.stored[key] if not 1 <= b <= count})
        if outside:
            yield Violation(
                Check.ONE_OWNER,
                f"{key} lists bucket id(s) {format_ids(outside)} outside 1..{count}",
            )
    for key, why in sorted(facts.unreadable.items()):
        yield Violation(Check.ONE_OWNER, f"the entry of {key} is unreadable: {why}")
    shared: dict[tuple[str, ...], list[int]] = {}
    for bucket, keys in sorted(listers.items()):
        if len(keys) > 1:
            shared.setdefault(tuple(keys), []).append(bucket)
    for nodes, buckets in sorted(shared.items(), key=lambda item: item[1][0]):
        yield Violation(
            Check.ONE_OWNER,
            f"bucket(s) {format_ids(buckets)} listed by {len(nodes)} nodes: {', '.join(nodes)}",
        )
    unowned = [b for b in range(1, count + 1) if b not in listers]
    if unowned and facts.live:
        what = f"{len(unowned)} bucket(s) have no owner"
        if facts.pending is not None and facts.lock_held:
            notes.append(f"{what} while a plan is applied in steps: {format_ids(unowned)}")
        else:
            live = len(facts.live)
            yield Violation(
                Check.ONE_OWNER, f"{what} while {live} node(s) are live: {format_ids(unowned)}"
            )


def _classify_owners(facts: Facts) -> Classification:
    """The owners classified as the cycle does (:func:`allot.cycle.classify.classify`), from their
    stored lists as they are: an owner gone with no stored departure is ``newly_departed``."""
    departed = {
        key: dt.datetime.fromtimestamp(ms / 1000, dt.UTC) for key, ms in facts.departures.items()
    }
    holding = {key: buckets for key, buckets in facts.stored.items() if buckets}
    live = dict.fromkeys(facts.live, 1.0)
    return classify(live, holding, holding.keys(), departed, facts.now, facts.grace)


def _owner_state(facts: Facts, classes: Classification) -> Iterator[Violation]:
    unknown = set(classes.newly_departed)
    holding = {key: buckets for key, buckets in facts.stored.items() if buckets}
    for key in sorted(holding):
        held = f"{key} holds {len(set(holding[key]))} bucket(s)"
        if key in unknown:
            yield Violation(
                Check.OWNER_STATE, f"{held} but is unknown: not a member, no stored departure"
            )
        elif key in classes.offline:
            gone = (facts.now - classes.departed_at[key]).total_seconds()
            yield Violation(
                Check.OWNER_STATE,
                f"{held} but is offline: gone {gone:.0f} s, past its grace period of "
                f"{facts.grace:g} s",
            )


def _sql_agrees(
    facts: Facts, listers: Mapping[int, list[str]], notes: list[str]
) -> Iterator[Violation]:
    if facts.version_problem is not None:
        yield Violation(
            Check.SQL_AGREES,
            f"assignment-version is unreadable ({facts.version_problem}): ZooKeeper's epoch is "
            "unknown",
        )
    elif facts.sql_epoch != facts.epoch:
        lag = f"SQL mirrors epoch {facts.sql_epoch}, ZooKeeper is at {facts.epoch}"
        if facts.lock_held and facts.sql_epoch < facts.epoch:
            notes.append(f"{lag}: a cycle holds the assignment lock, its mirror is in flight")
            return
        yield Violation(Check.SQL_AGREES, lag)
    differ: list[str] = []
    for bucket in range(1, facts.bucket_count + 1):
        keys, sql = listers.get(bucket, []), facts.sql_owners.get(bucket)
        if sql in keys if keys else sql is None:
            continue  # a bucket listed twice agrees with either lister (one-owner reports it)
        zk = " and ".join(keys) or "nobody"
        differ.append(f"{bucket} (SQL {sql or 'nobody'}, ZooKeeper {zk})")
    if differ:
        more = f" and {len(differ) - 5} more" if len(differ) > 5 else ""
        yield Violation(
            Check.SQL_AGREES,
            f"bucket.node_key differs for {len(differ)} bucket(s): {', '.join(differ[:5])}{more}",
        )


def _lease_owner(
    facts: Facts, listers: Mapping[int, list[str]], notes: list[str]
) -> Iterator[Violation]:
    if facts.leases is None:
        return
    notes.extend(f"ignored leases/{name}: not a bucket id" for name in facts.leases.foreign)
    for bucket, lease in sorted(facts.leases.leases.items()):
        holder = lease.node_key
        owner = " and ".join(listers.get(bucket, [])) or "nobody"
        if not 1 <= bucket <= facts.bucket_count:
            yield Violation(
                Check.LEASE_OWNER,
                f"a lease exists for bucket {bucket}, outside 1..{facts.bucket_count}",
            )
        elif holder is None:
            yield Violation(
                Check.LEASE_OWNER,
                f"the lease of bucket {bucket} is unreadable: {lease.data[:60]!r}",
            )
        elif holder not in listers.get(bucket, []) and holder in facts.live:
            # the donor of a handoff keeps the lease until its running task ends (at most
            # ALLOT_HANDOFF_TIMEOUT); the owner starts once it is released
            notes.append(
                f"bucket {bucket} is being handed over: {holder} holds its lease, "
                f"its owner is {owner}"
            )
        elif holder not in listers.get(bucket, []):
            yield Violation(
                Check.LEASE_OWNER,
                f"the lease of bucket {bucket} names {holder}, its owner is {owner}",
            )


def _stuck_plan(facts: Facts) -> Iterator[Violation]:
    if facts.lock_held:
        return  # a cycle is applying: in flight, not stuck
    if facts.applying:
        yield Violation(
            Check.STUCK_PLAN,
            f"plan(s) {', '.join(facts.applying)} applying while nobody holds the assignment lock",
        )
    if facts.pending is not None:
        yield Violation(
            Check.STUCK_PLAN,
            f"the apply in steps of plan {facts.pending.get('plan_id', '?')} was interrupted "
            "(assignment-version marks it pending) and nobody holds the assignment lock",
        )
