"""Writing the assignment: applying a plan in one fenced multi-op transaction (or fenced steps
when too big), and refreshing ``last-update-time`` when a cycle moves nothing. Both commit
through :func:`commit_ops`; the operations come from :mod:`allot.zk.batch` (pure). The lock
holder's single-znode writes beside the assignment (:mod:`allot.zk.departures`,
:mod:`allot.zk.epoch`) commit through :func:`commit_as_holder`.

The fence
    Every transaction starts by writing ``assignment-version`` *conditionally on the data
    version read with the snapshot* (``set_data(path, data, version=read)``; ``create`` when the
    snapshot saw no version znode, which fails with ``NodeExists`` if someone else created it
    first). A second operation ``check``s that the caller's lock znode still exists (when a
    :class:`~allot.zk.lock.LockGuard` is given): the lock znode is ephemeral, so once the
    holder's session has ended the transaction cannot commit, even if the guard's local check
    raced with the expiry. If either fails, ZooKeeper rolls the whole transaction back and
    :class:`~allot.errors.StaleAssignment` / :class:`~allot.errors.LockLost` is raised:
    partial writes never happen within a transaction.

What is written
    Only nodes whose bucket list changes (or whose entry is corrupt or missing): their
    ``assignments`` and ``last-update-time`` (created where missing, overwritten where present),
    plus the deletion of the entries of the nodes listed in ``remove`` (Amoro also deletes the
    entries of offline nodes; allot deletes exactly those the plan names, so suspect nodes keep
    theirs). The epoch in ``assignment-version`` rises by one: ``{"epoch","plan_id",
    "applied_at"}``.

The 1 MB limit
    ZooKeeper drops the connection on a request over ``jute.maxbuffer`` (1,048,575 bytes by
    default). Sizes are computed exactly before sending (:func:`allot.zk.batch.op_size`). A
    full write of 1,000 nodes holding 16,384 buckets takes 0.46 MB (0.62 MB with digest ACLs,
    which every create carries), so in practice a plan is one transaction. When a plan does
    not fit, it is applied in steps (:func:`allot.zk.batch.plan_steps`), each a transaction
    fenced like the single one and each raising the data version of ``assignment-version``:
    the next step checks the version the previous step produced, so no other writer can
    interleave. Steps come in a safe order: first removed nodes are deleted and every node
    that loses buckets is written with what it keeps (``old & new``), then the nodes that
    gain are written with their final lists. Readers of the subtree therefore never see a
    bucket held by two nodes; between steps some moving buckets are held by no one. The steps
    before the last carry a ``pending`` marker in ``assignment-version`` while its ``epoch``,
    ``plan_id`` and ``applied_at`` stay those of the previous plan: the new epoch becomes
    visible only with the last step, together with the last writes. If the applier dies
    between steps, the marker stays, the tree is a safe intermediate (no double owner), and
    the next plan (read from that tree) repairs it; it takes the epoch the interrupted plan
    never published.

Refreshing times (:func:`touch`, step 4 of the cycle)
    Fenced like an apply but without publishing an epoch: every transaction ``check``s the
    data version of ``assignment-version`` the snapshot read (when the znode exists) and the
    caller's lock znode, so a stale lock holder cannot write even timestamps. Split into
    several transactions, each fenced the same way, only if the refresh exceeds the request
    limit (it cannot for 1,000 nodes: about 90 bytes per node).

Failure modes
    SUSPENDED / LOST before a commit: the guard trips and :class:`~allot.errors.LockLost` is
    raised before anything is sent; a session that ended unnoticed fails the lock ``check``
    inside the transaction (nothing written). Connection cut during a commit:
    :class:`~allot.errors.ApplyOutcomeUnknown` (``assignment-version`` tells whether it
    landed; repeating the same ``plan_id`` is recognised). Stale ephemeral nodes: none written
    here; the lock znode is only ``check``ed.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError, NoNodeError
from kazoo.protocol.serialization import Transaction
from kazoo.security import OPEN_ACL_UNSAFE

from allot.errors import AccessDenied, ApplyOutcomeUnknown, LockLost, PlanTooLarge, StaleAssignment
from allot.zk.batch import (
    CONNECTION_ERRORS,
    DEFAULT_MAX_REQUEST_BYTES,
    REQUEST_OVERHEAD_BYTES,
    Op,
    diff,
    first_failure,
    op_size,
    pack,
    plan_steps,
)
from allot.zk.client import ensure_layout
from allot.zk.codec import MsClock, encode_time, now_ms
from allot.zk.lock import LockGuard
from allot.zk.paths import LAST_UPDATE_TIME, ZkPaths
from allot.zk.snapshot import AllAssignments
from allot.zk.version import AssignmentVersion, read_version

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "ApplyResult",
    "apply_plan",
    "commit_as_holder",
    "commit_ops",
    "touch",
]


@dataclass(frozen=True)
class ApplyResult:
    """What an apply did.

    ``epoch`` is the epoch now published (``base_epoch`` + 1, or ``base_epoch`` when nothing
    changed); ``written`` / ``removed`` name the node entries written / deleted;
    ``request_bytes`` holds the exact size of each committed transaction (one per step).
    ``already_applied`` is True when ``assignment-version`` already carried this ``plan_id``
    (a repeated delivery of the same plan): nothing was written by this call.
    """

    plan_id: str
    base_epoch: int
    epoch: int
    applied_at: int | None
    written: tuple[str, ...]
    removed: tuple[str, ...]
    request_bytes: tuple[int, ...]
    already_applied: bool = False

    @property
    def transactions(self) -> int:
        """How many transactions were committed."""
        return len(self.request_bytes)


def apply_plan(
    client: KazooClient,
    paths: ZkPaths,
    snapshot: AllAssignments,
    assignments: Mapping[str, Iterable[int]],
    *,
    plan_id: str,
    remove: Collection[str] = (),
    guard: LockGuard | None = None,
    clock: MsClock = now_ms,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> ApplyResult:
    """Apply a plan computed from ``snapshot`` (the :meth:`AssignmentStore.read_all` it was
    planned on), fenced on the ``assignment-version`` that snapshot read.

    Args:
        assignments: the buckets each named node ends with (the planner's ``assignments``);
            nodes it does not name keep what they hold unless listed in ``remove``.
        plan_id: recorded in ``assignment-version``; makes a repeated apply recognisable.
        remove: nodes whose entries are deleted (offline nodes); absent ones are ignored.
        guard: the assignment lock's guard; checked before every transaction, and its lock
            znode is checked inside every transaction.
        max_request_bytes: the servers' ``jute.maxbuffer``.

    Returns:
        What was written, the new epoch and the size of each transaction. A plan that changes
        nothing writes nothing and returns ``epoch == base_epoch``. Applying the same
        ``plan_id`` again (a repeated task) returns ``already_applied=True``.

    Raises:
        InvalidPlan: the plan would give a bucket to two nodes (or is malformed); nothing
            written.
        LockLost: the guard tripped or the lock znode is gone; nothing (more) written.
        StaleAssignment: ``assignment-version`` or the subtree moved since ``snapshot`` was
            read; the failing transaction wrote nothing (with steps: earlier steps stand, in
            their safe order, and the next plan repairs the tree).
        ApplyOutcomeUnknown: the connection broke during a commit.
        PlanTooLarge: one node's writes alone exceed ``max_request_bytes``.
        AccessDenied: ZooKeeper refused a write (``ALLOT_ZK_AUTH``).
    """
    changes = diff(snapshot, assignments, remove)
    base = snapshot.version
    if changes.empty:
        return ApplyResult(plan_id, base.epoch, base.epoch, base.applied_at, (), (), ())
    if guard is not None:
        guard.check()
    _ensure_layout(client, paths)
    now = clock()
    steps = plan_steps(
        client.default_acl,
        client.chroot,
        paths,
        snapshot,
        changes,
        plan_id=plan_id,
        now=now,
        removed_children=_children_of(client, paths, changes.remove),
        lock_node=None if guard is None else guard.lock_node,
        max_request_bytes=max_request_bytes,
    )
    sizes: list[int] = []
    zversion = base.zversion
    for index, ops in enumerate(steps):
        if index > 0:  # fence on the version the previous step produced
            ops = [Op("set", ops[0].path, ops[0].data, zversion), *ops[1:]]
        what = f"plan {plan_id} (step {index + 1} of {len(steps)})"
        results, size = commit_ops(client, ops, guard, max_request_bytes, what, plan_id)
        failure = first_failure(results)
        if failure is not None:
            position, error = failure
            current = _already_applied(client, paths, plan_id) if index == position == 0 else None
            if current is not None:
                log.info("plan %s was already applied; nothing to do", plan_id)
                return ApplyResult(
                    plan_id, base.epoch, current.epoch, current.applied_at, (), (), (), True
                )
            raise _explain(ops, position, error, index, len(steps), plan_id)
        zversion = 0 if isinstance(results[0], str) else results[0].version
        sizes.append(size)
    log.info(
        "applied plan %s: epoch %d -> %d, %d node(s) written, %d removed, %d transaction(s)",
        plan_id,
        base.epoch,
        base.epoch + 1,
        len(changes.final),
        len(changes.remove),
        len(sizes),
    )
    return ApplyResult(
        plan_id,
        base.epoch,
        base.epoch + 1,
        now,
        tuple(changes.final),
        changes.remove,
        tuple(sizes),
    )


def touch(
    client: KazooClient,
    paths: ZkPaths,
    snapshot: AllAssignments,
    node_keys: Collection[str],
    *,
    guard: LockGuard | None = None,
    clock: MsClock = now_ms,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> int:
    """Set ``last-update-time`` to now for the ``node_keys`` that have a readable entry in
    ``snapshot`` (others are skipped: a plan creates their entries).

    Returns:
        The number of nodes refreshed.

    Raises:
        LockLost: the guard tripped or the lock znode is gone; nothing (more) written.
        StaleAssignment: ``assignment-version`` or a time znode changed since ``snapshot`` was
            read; the failing transaction wrote nothing.
        ApplyOutcomeUnknown: the connection broke during a commit.
        AccessDenied: ZooKeeper refused the write.
    """
    keys = sorted(k for k in set(node_keys) if k in snapshot.nodes)
    if not keys:
        return 0
    if guard is not None:
        guard.check()
    data = encode_time(clock())
    fixed: list[Op] = []
    if snapshot.version.exists:
        fixed.append(Op("check", paths.assignment_version, version=snapshot.version.zversion))
    if guard is not None:
        fixed.append(Op("check", guard.lock_node))
    acl, chroot = client.default_acl or OPEN_ACL_UNSAFE, client.chroot or ""
    groups = []
    for key in keys:
        path = paths.last_update_time(key)
        exists = LAST_UPDATE_TIME in snapshot.present.get(key, ())
        groups.append([Op("set", path, data) if exists else Op("create", path, data)])
    overhead = REQUEST_OVERHEAD_BYTES + sum(op_size(op, acl, chroot) for op in fixed)
    for chunk in pack(groups, max_request_bytes, overhead, acl, chroot):
        ops = [*fixed, *chunk]
        results, _ = commit_ops(client, ops, guard, max_request_bytes, "refreshing times")
        failure = first_failure(results)
        if failure is None:
            continue
        position, error = failure
        if guard is not None and ops[position].path == guard.lock_node:
            raise LockLost("the assignment lock znode is gone; last-update-time not refreshed")
        raise StaleAssignment(
            f"last-update-time not refreshed: {ops[position].path} changed since it was read "
            f"({type(error).__name__})"
        )
    return len(keys)


def commit_ops(
    client: KazooClient,
    ops: Sequence[Op],
    guard: LockGuard | None,
    limit: int,
    what: str,
    plan_id: str = "",
) -> tuple[list[Any], int]:
    """Check the guard, then commit ``ops`` as one transaction.

    Returns:
        kazoo's per-operation results (failures are exception instances: see
        :func:`allot.zk.batch.first_failure`) and the exact request size in bytes.

    Raises:
        LockLost: the guard tripped; nothing was sent.
        PlanTooLarge: the request is over ``limit`` bytes; nothing was sent.
        AccessDenied: ZooKeeper refused the request.
        ApplyOutcomeUnknown: the connection broke while the request was in flight.
    """
    if guard is not None:
        guard.check()
    transaction = client.transaction()
    for op in ops:
        op.add_to(transaction)
    size = len(Transaction(transaction.operations).serialize()) + 8
    if size > limit:  # sizes are planned exactly: this only guards against a kazoo change
        raise PlanTooLarge(f"{what}: a request of {size:,} bytes is over the limit of {limit:,}")
    try:
        results: list[Any] = transaction.commit()
    except NoAuthError:
        raise AccessDenied(f"ZooKeeper refused {what}: check ALLOT_ZK_AUTH") from None
    except CONNECTION_ERRORS as exc:
        raise ApplyOutcomeUnknown(
            f"the connection to ZooKeeper broke while committing {what} "
            f"({type(exc).__name__}); whether it was applied shows in assignment-version",
            plan_id,
        ) from None
    return results, size


def commit_as_holder(
    client: KazooClient, write: Op, guard: LockGuard, what: str, *, release: bool = False
) -> None:
    """Commit ``write`` in one transaction that first ``check``s the holder's lock znode, so
    a holder whose session ended writes nothing and a concurrent writer makes it fail. With
    ``release``, the same transaction then deletes the lock znode: the write and the release
    land together or not at all (one round trip fewer than a write, then a release).

    Raises:
        LockLost: the guard tripped or the lock znode is gone; nothing written.
        StaleAssignment: ``write``'s znode changed since it was read; nothing written.
        ApplyOutcomeUnknown, AccessDenied: see :func:`commit_ops`.
    """
    ops = [Op("check", guard.lock_node), write]
    if release:
        ops.append(Op("delete", guard.lock_node))
    results, _ = commit_ops(client, ops, guard, DEFAULT_MAX_REQUEST_BYTES, f"writing {what}")
    failure = first_failure(results)
    if failure is None:
        return
    position, error = failure
    if position != 1:
        raise LockLost(f"{what} not written: the assignment lock znode is gone")
    raise StaleAssignment(f"{what} changed since it was read ({type(error).__name__})")


def _ensure_layout(client: KazooClient, paths: ZkPaths) -> None:
    """:func:`~allot.zk.client.ensure_layout`, after one pipelined look (one round trip, not
    one per znode, on the failover's path) that finds the layout there as it usually is."""
    parts = paths.root.strip("/").split("/")
    wanted = ["/" + "/".join(parts[:i]) for i in range(1, len(parts))] + list(paths.containers)
    pending = [client.exists_async(path) for path in wanted]
    if any(result.get() is None for result in pending):
        ensure_layout(client, paths)


def _children_of(client: KazooClient, paths: ZkPaths, keys: Iterable[str]) -> dict[str, list[str]]:
    requests = {key: client.get_children_async(paths.node_entry(key)) for key in keys}
    children: dict[str, list[str]] = {}
    for key, result in requests.items():
        try:
            children[key] = list(result.get())
        except NoNodeError:
            children[key] = []
    return children


def _already_applied(client: KazooClient, paths: ZkPaths, plan_id: str) -> AssignmentVersion | None:
    """The current version when it already records ``plan_id`` as fully applied, else None."""
    current = read_version(client, paths)
    return current if current.plan_id == plan_id and current.pending is None else None


def _explain(
    ops: list[Op], position: int, error: Exception, step: int, steps: int, plan_id: str
) -> Exception:
    name = type(error).__name__
    done = "" if step == 0 else f" (steps 1-{step} of {steps} were committed and stand)"
    if isinstance(error, NoAuthError):
        return AccessDenied(f"ZooKeeper refused writing {ops[position].path}: check ALLOT_ZK_AUTH")
    if position == 1 and ops[1].kind == "check":
        return LockLost(
            f"plan {plan_id} not applied{done}: the assignment lock znode is gone "
            "(the session that took the lock has ended)"
        )
    if position == 0:
        return StaleAssignment(
            f"plan {plan_id} not applied{done}: assignment-version moved since it was read "
            f"({name}): another plan was applied first"
        )
    return StaleAssignment(
        f"plan {plan_id} not applied{done}: {ops[position].path} changed since it was read "
        f"({name}); re-read and plan again"
    )
