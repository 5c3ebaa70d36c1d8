"""The bytes allot writes to ZooKeeper, and strict decoders for what it reads back.

Pure functions, no I/O. Encoders produce exactly Amoro's formats for the assignment subtree:

- ``assignments``: compact JSON list of bucket ids as decimal strings, ascending:
  ``b'["1","4","7"]'`` (no spaces), ``b'[]'`` for a node that holds nothing;
- ``last-update-time``: epoch milliseconds in decimal ASCII: ``b'1700000000000'``.

and compact JSON for allot's own znodes (``assignment-version``, membership info, bucket
leases).

Decoders never trust the bytes: anything that is not exactly the expected shape raises
:class:`ValueError` whose message is the reason (the store reports it per node as "corrupt"
instead of failing every reader).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from allot.errors import InvalidNodeKey
from allot.names import validate_node_key

MsClock = Callable[[], int]
"""A function returning the current time in epoch milliseconds (injectable in tests). Not
:data:`allot.cycle.Clock`, which returns a datetime."""

_DECIMAL = re.compile(r"[0-9]{1,18}")


def now_ms() -> int:
    """The current time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _json(data: bytes | None) -> Any:
    if data is None:
        raise ValueError("no data")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON ({exc.msg} at {exc.pos})") from None


def encode_buckets(buckets: Iterable[int]) -> bytes:
    """Amoro's ``assignments`` bytes for ``buckets``: sorted, compact, ids as strings."""
    return _compact([str(bucket) for bucket in sorted(buckets)])


def decode_buckets(data: bytes | None) -> tuple[int, ...]:
    """The sorted bucket ids stored in an ``assignments`` znode.

    Raises:
        ValueError: the data is not a JSON list of distinct positive decimal strings.
    """
    value = _json(data)
    if not isinstance(value, list):
        raise ValueError(f"expected a JSON list, got {type(value).__name__}")
    buckets: list[int] = []
    for item in value:
        if not isinstance(item, str) or not _DECIMAL.fullmatch(item):
            raise ValueError(f"bucket id {item!r} is not a decimal string")
        bucket = int(item)
        if bucket < 1:
            raise ValueError(f"bucket id {item!r} is not positive")
        buckets.append(bucket)
    ordered = sorted(buckets)
    for left, right in itertools.pairwise(ordered):
        if left == right:
            raise ValueError(f"bucket {left} listed twice")
    return tuple(ordered)


def encode_time(epoch_ms: int) -> bytes:
    """``last-update-time`` bytes: epoch milliseconds in decimal ASCII."""
    return str(int(epoch_ms)).encode("ascii")


def decode_time(data: bytes | None) -> int:
    """The epoch milliseconds stored in a ``last-update-time`` znode.

    Raises:
        ValueError: the data is not a non-negative decimal integer.
    """
    text = (data or b"").decode("ascii", errors="replace")
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"last-update-time {text[:40]!r} is not a decimal integer")
    return int(text)


@dataclass(frozen=True)
class VersionRecord:
    """The content of ``assignment-version``.

    ``pending`` is set only while a plan too large for one transaction is being applied in
    steps (see :mod:`allot.zk.apply`): ``{"plan_id", "epoch", "step", "steps"}``.
    """

    epoch: int
    plan_id: str | None
    applied_at: int | None
    pending: dict[str, Any] | None = None


def encode_version(record: VersionRecord) -> bytes:
    """``assignment-version`` bytes: ``{"epoch":N,"plan_id":"...","applied_at":ms}``."""
    value: dict[str, Any] = {
        "epoch": record.epoch,
        "plan_id": record.plan_id,
        "applied_at": record.applied_at,
    }
    if record.pending is not None:
        value["pending"] = record.pending
    return _compact(value)


def decode_version(data: bytes | None) -> VersionRecord:
    """Decode ``assignment-version``.

    Raises:
        ValueError: not a JSON object with a non-negative integer ``epoch``, a string or null
            ``plan_id`` and an integer or null ``applied_at``.
    """
    value = _json(data)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    epoch = value.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise ValueError(f"epoch {epoch!r} is not a non-negative integer")
    plan_id = value.get("plan_id")
    if plan_id is not None and not isinstance(plan_id, str):
        raise ValueError(f"plan_id {plan_id!r} is not a string")
    applied_at = value.get("applied_at")
    if applied_at is not None and (not isinstance(applied_at, int) or isinstance(applied_at, bool)):
        raise ValueError(f"applied_at {applied_at!r} is not an integer")
    pending = value.get("pending")
    if pending is not None and not isinstance(pending, dict):
        raise ValueError("pending is not an object")
    return VersionRecord(epoch, plan_id, applied_at, pending)


@dataclass(frozen=True)
class MemberInfo:
    """What a live node publishes in its ephemeral membership znode (not to be confused with
    :class:`allot.planner.NodeInfo`, a node's weight and state as the planner sees them).

    ``started_at`` is the epoch milliseconds at which the process built this record (before it
    registered); :mod:`allot.zk.registration` compares it with a process's start time to tell
    a crashed predecessor from a live process reusing its pid.
    """

    node_key: str
    host: str
    pid: int
    weight: float
    started_at: int


def encode_member_info(info: MemberInfo) -> bytes:
    """Membership bytes: ``{"node_key","host","pid","weight","started_at"}`` as compact JSON."""
    return _compact(
        {
            "node_key": info.node_key,
            "host": info.host,
            "pid": info.pid,
            "weight": info.weight,
            "started_at": info.started_at,
        }
    )


def decode_member_info(data: bytes | None) -> MemberInfo:
    """Decode a membership znode.

    Raises:
        ValueError: a field is missing or of the wrong type, the node key is invalid, or the
            weight is not a finite number > 0.
    """
    value = _json(data)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    node_key, host, pid = value.get("node_key"), value.get("host"), value.get("pid")
    weight, started_at = value.get("weight"), value.get("started_at")
    if not isinstance(node_key, str):
        raise ValueError("node_key is missing or not a string")
    try:
        validate_node_key(node_key)
    except InvalidNodeKey as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(host, str):
        raise ValueError("host is missing or not a string")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid < 0:
        raise ValueError(f"pid {pid!r} is not a non-negative integer")
    if (
        not isinstance(weight, int | float)
        or isinstance(weight, bool)
        or not math.isfinite(weight)
        or weight <= 0
    ):
        raise ValueError(f"weight {weight!r} is not a number > 0")
    if not isinstance(started_at, int) or isinstance(started_at, bool):
        raise ValueError(f"started_at {started_at!r} is not an integer")
    return MemberInfo(node_key, host, pid, float(weight), started_at)


@dataclass(frozen=True)
class LeaseRecord:
    """The content of a bucket's lease ``{root}/leases/{bucket}`` (written by
    :mod:`allot.work.leases`): the node that took it and the assignment epoch it took it at.

    ``epoch`` is None for a lease that does not record one (allot always writes it; readers
    judge a lease by the node it names). The lease's token is its znode's ``czxid``, not part
    of its data (:class:`allot.zk.leases.Lease`).
    """

    node_key: str
    epoch: int | None


def encode_lease(record: LeaseRecord) -> bytes:
    """Lease bytes: ``{"node_key":"...","epoch":N}`` as compact JSON."""
    return _compact({"node_key": record.node_key, "epoch": record.epoch})


def decode_lease(data: bytes | None) -> LeaseRecord:
    """Decode a lease znode.

    The node key is returned as written, not validated: ``allot verify`` reports whichever
    node a lease names.

    Raises:
        ValueError: not a JSON object with a string ``node_key``, or an ``epoch`` that is
            present and not a non-negative integer.
    """
    value = _json(data)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    node_key, epoch = value.get("node_key"), value.get("epoch")
    if not isinstance(node_key, str):
        raise ValueError("node_key is missing or not a string")
    if epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0):
        raise ValueError(f"epoch {epoch!r} is not a non-negative integer")
    return LeaseRecord(node_key, epoch)
