"""The epoch floor: ``assignment-version`` re-published at the highest epoch known when the
znode was deleted (by hand, or ZooKeeper rebuilt) or fell behind an epoch known elsewhere (SQL,
the last cycle's report), so an epoch never goes backwards.

Reading the version is :mod:`allot.zk.version`; applying a plan, which raises the epoch, is
:mod:`allot.zk.apply`. The floor is written only by the lock holder, in one transaction that
``check``s the holder's lock znode and the data version read
(:func:`~allot.zk.apply.commit_as_holder`).

Failure modes:
    SUSPENDED: the write checks the guard first and raises :class:`~allot.errors.LockLost`
    when it tripped; a commit cut by a lost connection raises
    :class:`~allot.errors.ApplyOutcomeUnknown` (a repeat is harmless).
    LOST: the lock znode is gone, the transaction fails its check: nothing written.
    A concurrent writer (an apply, a save) changed the znode since it was read: the write fails
    with :class:`~allot.errors.StaleAssignment` instead of overwriting it.
"""

from __future__ import annotations

import logging

from kazoo.client import KazooClient

from allot.zk.apply import commit_as_holder
from allot.zk.batch import Op
from allot.zk.codec import VersionRecord, encode_version
from allot.zk.lock import LockGuard
from allot.zk.paths import ZkPaths
from allot.zk.version import AssignmentVersion

log = logging.getLogger(__name__)


def republish_epoch(
    client: KazooClient,
    paths: ZkPaths,
    read: AssignmentVersion,
    epoch: int,
    guard: LockGuard,
) -> None:
    """Write ``assignment-version`` at ``epoch`` (keeping its plan id and time), fenced on the
    version ``read``: for a version znode deleted by hand or behind an epoch known elsewhere.

    Raises:
        LockLost, StaleAssignment, ApplyOutcomeUnknown, AccessDenied.
    """
    data = encode_version(VersionRecord(epoch, read.plan_id, read.applied_at))
    path = paths.assignment_version
    write = Op("create", path, data) if not read.exists else Op("set", path, data, read.zversion)
    commit_as_holder(client, write, guard, "assignment-version")
    log.warning("assignment-version re-published at epoch %d (it read %d)", epoch, read.epoch)
