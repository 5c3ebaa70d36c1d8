"""``{root}/assignment-version``: the epoch of the assignment, and the fence of every writer.

:class:`AssignmentVersion` is what the znode said when it was read, decoded by
:func:`version_from` (a malformed record is reported, never raised). :func:`read_version` is
the single ``get`` every writer starts from: the store reads it for its callers, an apply reads
it to tell a repeated plan from a stale one. The bytes are :mod:`allot.zk.codec`'s
(:class:`~allot.zk.codec.VersionRecord`); re-publishing a lost epoch is :mod:`allot.zk.epoch`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError, NoNodeError

from allot.errors import AccessDenied
from allot.zk.codec import decode_version
from allot.zk.paths import ZkPaths

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssignmentVersion:
    """What ``assignment-version`` said when it was read.

    ``zversion`` is the znode's data version (``-1``: the znode does not exist yet); it is what
    an apply fences on. ``epoch`` is 0 before the first applied plan. ``problem`` is set when
    the znode's data is malformed: ``epoch`` is then ``zversion + 1``, at least the lost epoch
    (so the next one still increases), and the next apply rewrites the record. ``pending`` is
    set when a plan applied in several steps was interrupted (see :mod:`allot.zk.apply`).
    """

    epoch: int = 0
    plan_id: str | None = None
    applied_at: int | None = None
    zversion: int = -1
    pending: Mapping[str, Any] | None = None
    problem: str | None = None
    mzxid: int = 0
    """The transaction that last wrote the znode (0 when absent or unknown): every allot
    write of the assignment writes it in the same transaction."""

    @property
    def exists(self) -> bool:
        """True when the ``assignment-version`` znode exists."""
        return self.zversion >= 0


def version_from(data: bytes | None, zversion: int, mzxid: int = 0) -> AssignmentVersion:
    """Decode ``assignment-version`` read at data version ``zversion`` (last written by
    transaction ``mzxid``); a malformed record is logged and reported in ``problem`` (never
    raised)."""
    try:
        record = decode_version(data)
    except ValueError as exc:
        log.error("assignment-version is corrupt (%s); the next apply rewrites it", exc)
        # Every allot write to the znode raises its data version and raises the epoch by at
        # most one, so the lost epoch was <= zversion + 1: taking that as the current epoch
        # keeps the next one above every epoch published before.
        return AssignmentVersion(
            epoch=zversion + 1, zversion=zversion, problem=str(exc), mzxid=mzxid
        )
    return AssignmentVersion(
        record.epoch, record.plan_id, record.applied_at, zversion, record.pending, mzxid=mzxid
    )


def get_result(result: Any) -> tuple[bytes, Any] | None:
    """The ``(data, stat)`` of a ``get_async`` result, or None when the znode does not exist.

    Raises:
        AccessDenied: ZooKeeper refused the read (``ALLOT_ZK_AUTH``).
    """
    try:
        data, stat = result.get()
    except NoNodeError:
        return None
    except NoAuthError:
        raise AccessDenied(
            "ZooKeeper refused to read the assignment: check ALLOT_ZK_AUTH"
        ) from None
    return data, stat


def read_version(client: KazooClient, paths: ZkPaths) -> AssignmentVersion:
    """The current ``assignment-version`` (epoch 0 and ``zversion`` -1 when absent).

    Failure modes: SUSPENDED: retried through ``client.retry`` until it gives up
    (``ConnectionLoss`` / ``RetryFailedError`` escape then); a malformed record is reported in
    :attr:`AssignmentVersion.problem`, never raised.

    Raises:
        AccessDenied: ZooKeeper refused the read.
    """
    found = client.retry(lambda: get_result(client.get_async(paths.assignment_version)))
    return AssignmentVersion() if found is None else version_from(found[0], found[1].version)
