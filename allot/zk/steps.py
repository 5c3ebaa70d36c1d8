"""Cutting a plan's changes into the fenced transactions that apply it: pure, no I/O.

Each transaction starts with the version operation (``create`` or a versioned ``set_data``
of ``assignment-version``) and, when the caller holds the lock, a ``check`` of its lock
znode; then the node writes. One transaction when it fits the request limit; otherwise
ordered steps (see :mod:`allot.zk.apply` for what readers see between them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kazoo.security import OPEN_ACL_UNSAFE

from allot.zk.batch import (
    DEFAULT_MAX_REQUEST_BYTES,
    REQUEST_OVERHEAD_BYTES,
    Changes,
    Op,
    delete_ops,
    op_size,
    pack,
    write_ops,
)
from allot.zk.codec import VersionRecord, encode_version
from allot.zk.model import AllAssignments
from allot.zk.paths import ASSIGNMENTS, LAST_UPDATE_TIME, ZkPaths

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
