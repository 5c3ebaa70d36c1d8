"""From a plan to ZooKeeper operations in bounded, fenced transactions: pure, no I/O.

:func:`diff` compares a plan with what was read and keeps only what changes (refusing a plan
that would give one bucket to two nodes); :func:`write_ops` / :func:`delete_ops` turn one node's
change into operations; :func:`op_size` computes, byte for byte, what an operation adds to a
multi request as ZooKeeper's jute encoding (and kazoo's serializer) writes it, so
:func:`pack` can cut the operations into transactions that each stay under ZooKeeper's request
limit (``jute.maxbuffer``, 1,048,575 bytes by default: a larger request makes the server drop
the connection).

:func:`plan_steps` puts these together: each transaction starts with the version operation
(:func:`version_op`: ``create`` or a versioned ``set_data`` of ``assignment-version``) and, when
the caller holds the lock, a ``check`` of its lock znode; then the node writes. One transaction
when it fits the request limit; otherwise ordered steps (see :mod:`allot.zk.apply` for what
readers see between them). :func:`first_failure` reads kazoo's per-operation results back.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kazoo.exceptions import (
    ConnectionClosedError,
    ConnectionLoss,
    OperationTimeoutError,
    RolledBackError,
    RuntimeInconsistency,
    SessionExpiredError,
)
from kazoo.security import OPEN_ACL_UNSAFE

from allot.errors import InvalidNodeKey, InvalidPlan, PlanTooLarge
from allot.names import validate_node_key
from allot.zk.codec import VersionRecord, encode_buckets, encode_time, encode_version
from allot.zk.paths import ASSIGNMENTS, LAST_UPDATE_TIME, ZkPaths
from allot.zk.snapshot import AllAssignments

DEFAULT_MAX_REQUEST_BYTES = 1_048_575
"""ZooKeeper's default ``jute.maxbuffer``: the largest request a server accepts (measured on
ZooKeeper 3.8.0: a request of 1,048,576 bytes makes the server close the connection)."""

MULTI_HEADER_BYTES = 9
"""Each operation of a multi request is preceded by a header: type (4), done (1), error (4)."""

REQUEST_OVERHEAD_BYTES = 8 + MULTI_HEADER_BYTES
"""Request header (xid, type) plus the closing multi header."""


@dataclass(frozen=True)
class Op:
    """One operation of a multi-op transaction (paths are without the client's chroot)."""

    kind: Literal["create", "set", "delete", "check"]
    path: str
    data: bytes = b""
    version: int = -1

    def add_to(self, transaction: Any) -> None:
        """Append this operation to a kazoo ``TransactionRequest``."""
        if self.kind == "create":
            transaction.create(self.path, self.data)
        elif self.kind == "set":
            transaction.set_data(self.path, self.data, version=self.version)
        elif self.kind == "delete":
            transaction.delete(self.path, version=self.version)
        else:
            transaction.check(self.path, self.version)


def _string_bytes(text: str) -> int:
    return 4 + len(text.encode("utf-8"))


def op_size(op: Op, acl: Sequence[Any], chroot: str = "") -> int:
    """Bytes ``op`` adds to a multi request, header included.

    ``acl`` is the ACL list creates carry (the client's ``default_acl`` or the open ACL);
    ``chroot`` is the client's chroot, which kazoo prefixes to every path.
    """
    size = MULTI_HEADER_BYTES + _string_bytes(chroot + op.path)
    if op.kind == "create":
        size += 4 + len(op.data) + 4 + 4  # data, ACL count, flags
        for entry in acl:
            size += 4 + _string_bytes(entry.id.scheme) + _string_bytes(entry.id.id)
    elif op.kind == "set":
        size += 4 + len(op.data) + 4  # data, version
    else:
        size += 4  # version
    return size


@dataclass(frozen=True)
class Changes:
    """What a plan changes relative to a snapshot.

    ``final``: every node to (re)write, with the buckets it ends with. ``revoke``: nodes that
    both lose and gain buckets, with the buckets they keep (``old & new``): a plan applied in
    several steps writes these first, so no bucket is ever held by two nodes in between.
    ``remove``: entries to delete (nodes the plan drops that exist in the snapshot).
    """

    final: Mapping[str, tuple[int, ...]]
    revoke: Mapping[str, tuple[int, ...]]
    remove: tuple[str, ...]
    shrinking: frozenset[str]

    @property
    def empty(self) -> bool:
        """True when applying the plan would write nothing."""
        return not self.final and not self.remove


def _buckets(node_key: str, raw: Iterable[int]) -> tuple[int, ...]:
    buckets: list[int] = []
    for bucket in raw:
        if not isinstance(bucket, int) or isinstance(bucket, bool) or bucket < 1:
            raise InvalidPlan(f"node {node_key}: bucket {bucket!r} is not a positive integer")
        buckets.append(bucket)
    ordered = tuple(sorted(buckets))
    if len(set(ordered)) != len(ordered):
        raise InvalidPlan(f"node {node_key}: a bucket is listed twice")
    return ordered


def diff(
    snapshot: AllAssignments,
    assignments: Mapping[str, Iterable[int]],
    remove: Collection[str] = (),
) -> Changes:
    """Compare a plan (``assignments`` for the nodes it sets, ``remove`` for the nodes whose
    entries it deletes) with ``snapshot``. Nodes named in neither keep what they hold.

    Raises:
        InvalidPlan: an invalid node key, a bucket that is not a positive integer or listed
            twice, a node both assigned and removed, or a bucket that would end up held by two
            nodes (counting the nodes the plan leaves untouched).
    """
    target: dict[str, tuple[int, ...]] = {}
    for key, raw in assignments.items():
        try:
            validate_node_key(key)
        except InvalidNodeKey as exc:
            raise InvalidPlan(str(exc)) from None
        target[key] = _buckets(key, raw)
    both = sorted(set(target) & set(remove))
    if both:
        raise InvalidPlan(f"node {both[0]} is both assigned and removed by the plan")
    owners: dict[int, str] = {}
    kept = {k: n.buckets for k, n in snapshot.nodes.items() if k not in target and k not in remove}
    for key, buckets in sorted({**kept, **target}.items()):
        for bucket in buckets:
            other = owners.setdefault(bucket, key)
            if other != key:
                raise InvalidPlan(f"bucket {bucket} would be held by both {other} and {key}")
    final: dict[str, tuple[int, ...]] = {}
    revoke: dict[str, tuple[int, ...]] = {}
    shrinking: set[str] = set()
    for key, new in sorted(target.items()):
        stored = snapshot.nodes.get(key)
        if stored is not None and stored.buckets == new:
            continue
        final[key] = new
        old = set(stored.buckets) if stored is not None else set()
        if old - set(new):
            shrinking.add(key)
            if set(new) - old:
                revoke[key] = tuple(sorted(old & set(new)))
    removed = tuple(sorted(k for k in set(remove) if k in snapshot.present))
    return Changes(final, revoke, removed, frozenset(shrinking))


def write_ops(
    paths: ZkPaths, node_key: str, buckets: Iterable[int], present: frozenset[str] | None, now: int
) -> list[Op]:
    """Operations that make a node's entry hold ``buckets`` (and ``now`` as its time).

    ``present`` is which of its two znodes exist (None: not even the entry exists): missing
    ones are created, existing ones overwritten whatever they contain (a corrupt one too).
    """
    entry = paths.node_entry(node_key)
    ops: list[Op] = []
    if present is None:
        ops.append(Op("create", entry))
        present = frozenset()
    for name, data in (
        (ASSIGNMENTS, encode_buckets(buckets)),
        (LAST_UPDATE_TIME, encode_time(now)),
    ):
        ops.append(Op("set" if name in present else "create", f"{entry}/{name}", data))
    return ops


def delete_ops(paths: ZkPaths, node_key: str, children: Iterable[str]) -> list[Op]:
    """Operations that delete a node's entry and its ``children`` (children first)."""
    entry = paths.node_entry(node_key)
    return [Op("delete", f"{entry}/{child}") for child in sorted(children)] + [Op("delete", entry)]


def pack(
    groups: Sequence[Sequence[Op]],
    budget: int,
    fixed_bytes: int,
    acl: Sequence[Any],
    chroot: str = "",
) -> list[list[Op]]:
    """Cut ``groups`` (each kept whole, order kept) into transactions of at most ``budget``
    bytes, each of which also carries ``fixed_bytes`` of fixed operations and overhead.

    Raises:
        PlanTooLarge: one group alone does not fit.
    """
    chunks: list[list[Op]] = [[]]
    used = fixed_bytes
    for group in groups:
        size = sum(op_size(op, acl, chroot) for op in group)
        if fixed_bytes + size > budget:
            raise PlanTooLarge(
                f"writing {group[0].path} takes {fixed_bytes + size:,} bytes in one request, over "
                f"ZooKeeper's limit of {budget:,} (jute.maxbuffer): use fewer buckets per node, "
                "or raise jute.maxbuffer on the servers and max_request_bytes"
            )
        if used + size > budget and chunks[-1]:
            chunks.append([])
            used = fixed_bytes
        chunks[-1].extend(group)
        used += size
    return chunks


_WIDEST_PENDING = {"epoch": 10**12, "step": 10**6, "steps": 10**6}
"""Placeholder numbers at least as wide as any real ``pending`` marker, for size budgets."""


def version_op(paths: ZkPaths, record: VersionRecord, zversion: int) -> Op:
    """The fencing write of ``assignment-version``: ``create`` when the snapshot saw no
    znode (``zversion`` -1; fails with NodeExists if someone created it since), otherwise
    ``set_data`` conditional on ``zversion`` (fails with BadVersion if anyone wrote since)."""
    if zversion < 0:
        return Op("create", paths.assignment_version, encode_version(record))
    return Op("set", paths.assignment_version, encode_version(record), zversion)


def plan_steps(
    acl: Any,
    chroot: str | None,
    paths: ZkPaths,
    snapshot: AllAssignments,
    changes: Changes,
    *,
    plan_id: str,
    now: int,
    removed_children: Mapping[str, Iterable[str]],
    lock_node: str | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> list[list[Op]]:
    """The transactions (lists of operations, version operation first) that apply ``changes``.

    Args:
        acl: the ACL list creates carry (the client's ``default_acl``; None: open ACL).
        chroot: the client's chroot, counted in the request sizes.
        removed_children: the children of each removed node's entry (deleted first).
        lock_node: the caller's lock znode, ``check``ed in every transaction.

    Steps after the first carry ``zversion`` 0 in their version operation as a placeholder:
    the committer replaces it with the version the previous step produced.

    Raises:
        PlanTooLarge: one node's writes alone exceed ``max_request_bytes``.
    """
    acl = acl or OPEN_ACL_UNSAFE
    chroot = chroot or ""
    base = snapshot.version
    final_record = VersionRecord(base.epoch + 1, plan_id, now)
    fence = [] if lock_node is None else [Op("check", lock_node)]

    def group(key: str, buckets: tuple[int, ...], present: frozenset[str] | None) -> list[Op]:
        return write_ops(paths, key, buckets, present, now)

    removals = [delete_ops(paths, k, removed_children.get(k, ())) for k in changes.remove]
    single = [version_op(paths, final_record, base.zversion), *fence]
    for ops in removals:
        single.extend(ops)
    for key, buckets in changes.final.items():
        single.extend(group(key, buckets, snapshot.present.get(key)))
    size = REQUEST_OVERHEAD_BYTES + sum(op_size(op, acl, chroot) for op in single)
    if size <= max_request_bytes:
        return [single]

    # Too big for one request: first what only takes buckets away (removed nodes, shrinking
    # nodes with what they keep), then what gives buckets, so no step makes a double owner.
    revoking: list[list[Op]] = list(removals)
    granting: list[list[Op]] = []
    written = frozenset({ASSIGNMENTS, LAST_UPDATE_TIME})
    for key, buckets in changes.final.items():
        present = snapshot.present.get(key)
        if key in changes.revoke:
            revoking.append(group(key, changes.revoke[key], present))
            granting.append(group(key, buckets, written))
        elif key in changes.shrinking:
            revoking.append(group(key, buckets, present))
        else:
            granting.append(group(key, buckets, present))
    widest = VersionRecord(
        base.epoch, base.plan_id, base.applied_at, {"plan_id": plan_id, **_WIDEST_PENDING}
    )
    heads = (version_op(paths, widest, base.zversion), version_op(paths, final_record, 0))
    fixed = REQUEST_OVERHEAD_BYTES + max(op_size(op, acl, chroot) for op in heads)
    fixed += sum(op_size(op, acl, chroot) for op in fence)
    chunks = pack([*revoking, *granting], max_request_bytes, fixed, acl, chroot)
    steps: list[list[Op]] = []
    for index, chunk in enumerate(chunks):
        if index == len(chunks) - 1:
            record = final_record
        else:
            pending = {
                "plan_id": plan_id,
                "epoch": base.epoch + 1,
                "step": index + 1,
                "steps": len(chunks),
            }
            record = VersionRecord(base.epoch, base.plan_id, base.applied_at, pending)
        zversion = base.zversion if index == 0 else 0
        steps.append([version_op(paths, record, zversion), *fence, *chunk])
    return steps


CONNECTION_ERRORS = (
    ConnectionLoss,
    SessionExpiredError,
    OperationTimeoutError,
    ConnectionClosedError,
)
"""Errors after which a commit may or may not have happened."""


def first_failure(results: Sequence[Any]) -> tuple[int, Exception] | None:
    """The position and error of the operation that made a transaction fail, or None when
    every operation succeeded (kazoo returns failures as exception instances, the other
    operations as ``RolledBackError`` / ``RuntimeInconsistency``)."""
    errors = [(i, r) for i, r in enumerate(results) if isinstance(r, Exception)]
    for position, error in errors:
        if not isinstance(error, RolledBackError | RuntimeInconsistency):
            return position, error
    return errors[0] if errors else None
