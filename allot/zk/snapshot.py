"""A read of the assignment subtree: the snapshot a plan is computed on and an apply is fenced
by (pure data, no I/O).

:class:`AllAssignments` is what :meth:`allot.zk.store.AssignmentStore.read_all` returns: every
node's :class:`NodeAssignment` (decoded by :func:`decode_node`) and the
:class:`~allot.zk.version.AssignmentVersion` read first. :mod:`allot.zk.batch` and
:mod:`allot.zk.apply` turn a plan and a snapshot into fenced writes.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from allot.zk.codec import decode_buckets, decode_time
from allot.zk.version import AssignmentVersion


@dataclass(frozen=True)
class NodeAssignment:
    """One node's stored assignment: sorted bucket ids and the last write time (epoch ms,
    ``None`` when the ``last-update-time`` znode is missing)."""

    node_key: str
    buckets: tuple[int, ...]
    last_update_ms: int | None


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
    newest_write: int = 0
    """The newest transaction that changed a node's bucket list or the set of entries (the
    largest ``mzxid`` of the ``assignments`` znodes and the subtree's ``pzxid``)."""

    @property
    def written_by_allot(self) -> bool:
        """True when no bucket list or entry changed after ``assignment-version`` was last
        written: allot writes both in one transaction, so the subtree is what the plan that
        ``assignment-version`` names left (a writer that bypasses the version, e.g. a hand
        edit, makes this False)."""
        return self.version.mzxid > 0 and self.newest_write <= self.version.mzxid

    def buckets_by_node(self) -> dict[str, list[int]]:
        """``{node_key: [bucket, ...]}`` of the readable nodes, the planner's ``assignments``."""
        return {key: list(node.buckets) for key, node in self.nodes.items()}


def decode_node(
    key: str, assignments: tuple[bytes, Any] | None, updated: tuple[bytes, Any] | None
) -> NodeAssignment:
    """A node's assignment from the ``(data, stat)`` of its two znodes (None: missing).

    Raises:
        ValueError: ``assignments`` is missing or either znode's data is malformed.
    """
    if assignments is None:
        raise ValueError("the assignments znode is missing")
    buckets = _decoded_buckets(assignments[0])
    last_update = None if updated is None else decode_time(updated[0])
    return NodeAssignment(key, buckets, last_update)


DECODE_CACHE = 8192
"""Distinct ``assignments`` contents whose decoding is remembered (a fleet's worth): a cycle
re-reads every node's list, and most lists are the bytes decoded the cycle before."""


@functools.lru_cache(maxsize=DECODE_CACHE)
def _decoded_buckets(data: bytes | None) -> tuple[int, ...]:
    """:func:`~allot.zk.codec.decode_buckets`, remembered by content (bad data is not
    remembered: it raises every time)."""
    return decode_buckets(data)
