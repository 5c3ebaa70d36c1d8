"""The values read from the assignment subtree, and the one read every writer starts from.

:class:`NodeAssignment`, :class:`AssignmentVersion` and :class:`AllAssignments` are pure data,
decoded by :func:`version_from` and :func:`decode_node`. :func:`read_version` is the single
``get`` of ``assignment-version``: the store reads it for its callers, an apply reads it to tell
a repeated plan from a stale one. It sits here, below both, so neither imports the other.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError, NoNodeError

from allot.errors import AccessDenied
from allot.zk.codec import decode_buckets, decode_time, decode_version
from allot.zk.paths import ZkPaths

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeAssignment:
    """One node's stored assignment: sorted bucket ids and the last write time (epoch ms,
    ``None`` when the ``last-update-time`` znode is missing)."""

    node_key: str
    buckets: tuple[int, ...]
    last_update_ms: int | None


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

    @property
    def exists(self) -> bool:
        """True when the ``assignment-version`` znode exists."""
        return self.zversion >= 0


@dataclass(frozen=True)
class AllAssignments:
    """A read of the whole assignment subtree, the input of planning and of an apply.

    ``nodes`` holds every readable node (including nodes holding no bucket). ``corrupt`` maps
    node keys whose data cannot be decoded to the reason; ``invalid`` maps child names that
    are not valid node keys to the reason. ``present`` records, for every valid node key
    found, which of ``assignments`` / ``last-update-time`` exist: an apply needs it to choose
    between create and set.
    """

    nodes: Mapping[str, NodeAssignment]
    version: AssignmentVersion
    corrupt: Mapping[str, str] = field(default_factory=dict)
    invalid: Mapping[str, str] = field(default_factory=dict)
    present: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def buckets_by_node(self) -> dict[str, list[int]]:
        """``{node_key: [bucket, ...]}`` of the readable nodes, the planner's ``assignments``."""
        return {key: list(node.buckets) for key, node in self.nodes.items()}


def version_from(data: bytes | None, zversion: int) -> AssignmentVersion:
    """Decode ``assignment-version`` read at data version ``zversion``; a malformed record is
    logged and reported in ``problem`` (never raised)."""
    try:
        record = decode_version(data)
    except ValueError as exc:
        log.error("assignment-version is corrupt (%s); the next apply rewrites it", exc)
        # Every allot write to the znode raises its data version and raises the epoch by at
        # most one, so the lost epoch was <= zversion + 1: taking that as the current epoch
        # keeps the next one above every epoch published before.
        return AssignmentVersion(epoch=zversion + 1, zversion=zversion, problem=str(exc))
    return AssignmentVersion(
        record.epoch, record.plan_id, record.applied_at, zversion, record.pending
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


def decode_node(
    key: str, assignments: tuple[bytes, Any] | None, updated: tuple[bytes, Any] | None
) -> NodeAssignment:
    """A node's assignment from the ``(data, stat)`` of its two znodes (None: missing).

    Raises:
        ValueError: ``assignments`` is missing or either znode's data is malformed.
    """
    if assignments is None:
        raise ValueError("the assignments znode is missing")
    buckets = decode_buckets(assignments[0])
    last_update = None if updated is None else decode_time(updated[0])
    return NodeAssignment(key, buckets, last_update)
