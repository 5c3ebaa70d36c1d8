"""What the cycle keeps in ZooKeeper beside the assignment, so that it never needs SQL to
decide (DESIGN.md: "ZooKeeper alone decides"):

- ``{root}/departures``: JSON ``{"node_key": ms, ...}``, when each node that is gone but still
  holds an entry was first seen gone (the start of its grace period);
- the epoch floor: ``assignment-version`` re-published at the highest epoch known when it was
  deleted or fell behind (an epoch never goes backwards);
- ``{root}/last-cycle``: the last cycle's report (JSON), for ``allot status`` and as one more
  witness of the epoch.

Both are written only by the lock holder, each in one transaction that ``check``s the
holder's lock znode and the data version read, so a holder whose session ended writes
nothing, and a concurrent writer makes the write fail (:class:`~allot.errors.StaleAssignment`)
instead of being overwritten.

Failure modes:
    SUSPENDED: reads retry through ``client.retry``; writes check the guard first and raise
    :class:`~allot.errors.LockLost` when it tripped; a commit cut by a lost connection raises
    :class:`~allot.errors.ApplyOutcomeUnknown` (a repeat of either write is harmless).
    LOST: the lock znode is gone, the transaction fails its check: nothing written.
    Malformed ``departures`` (a foreign or hand edit): reported in :attr:`Departures.problem`,
    read as empty (every gone node starts a fresh grace period: later, never earlier), and
    overwritten by the next write.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError

from allot.errors import InvalidNodeKey, LockLost, StaleAssignment
from allot.names import validate_node_key
from allot.zk.apply import commit_ops
from allot.zk.batch import DEFAULT_MAX_REQUEST_BYTES, Op, first_failure
from allot.zk.codec import VersionRecord, encode_version
from allot.zk.lock import LockGuard
from allot.zk.model import AssignmentVersion
from allot.zk.paths import ZkPaths

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Departures:
    """A read of ``{root}/departures``: ``times`` in epoch ms; ``zversion`` -1 when absent."""

    times: Mapping[str, int] = field(default_factory=dict)
    zversion: int = -1
    problem: str | None = None


def departures_path(paths: ZkPaths) -> str:
    """``{root}/departures``."""
    return f"{paths.root}/departures"


def decode_departures(data: bytes | None) -> dict[str, int]:
    """The departures map stored in ``data``.

    Raises:
        ValueError: not a JSON object of valid node keys to non-negative integers.
    """
    try:
        value = json.loads(data or b"{}")
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    times: dict[str, int] = {}
    for key, ms in value.items():
        try:
            validate_node_key(key)
        except InvalidNodeKey as exc:
            raise ValueError(str(exc)) from None
        if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
            raise ValueError(f"time of {key} is not a non-negative integer: {ms!r}")
        times[key] = ms
    return times


def read_departures(client: KazooClient, paths: ZkPaths) -> Departures:
    """Read ``{root}/departures`` (never raises for bad data; see the module docstring)."""
    try:
        data, stat = client.retry(client.get, departures_path(paths))
    except NoNodeError:
        return Departures()
    try:
        return Departures(decode_departures(data), stat.version)
    except ValueError as exc:
        log.error("%s is malformed (%s); grace periods restart", departures_path(paths), exc)
        return Departures({}, stat.version, str(exc))


def write_departures(
    client: KazooClient,
    paths: ZkPaths,
    read: Departures,
    times: Mapping[str, int],
    guard: LockGuard,
) -> None:
    """Replace the departures map read as ``read`` with ``times``, fenced (module docstring).

    Raises:
        LockLost, StaleAssignment, ApplyOutcomeUnknown, AccessDenied.
    """
    data = json.dumps(dict(sorted(times.items())), separators=(",", ":")).encode()
    path = departures_path(paths)
    write = Op("create", path, data) if read.zversion < 0 else Op("set", path, data, read.zversion)
    _commit(client, [Op("check", guard.lock_node), write], guard, "the departures")


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
    _commit(client, [Op("check", guard.lock_node), write], guard, "assignment-version")
    log.warning("assignment-version re-published at epoch %d (it read %d)", epoch, read.epoch)


def _commit(client: KazooClient, ops: list[Op], guard: LockGuard, what: str) -> None:
    results, _ = commit_ops(client, ops, guard, DEFAULT_MAX_REQUEST_BYTES, f"writing {what}")
    failure = first_failure(results)
    if failure is None:
        return
    position, error = failure
    if position == 0:
        raise LockLost(f"{what} not written: the assignment lock znode is gone")
    raise StaleAssignment(f"{what} changed since it was read ({type(error).__name__})")


def publish_last_cycle(client: KazooClient, paths: ZkPaths, report: Mapping[str, Any]) -> None:
    """Write a cycle's JSON report to ``{root}/last-cycle`` (best effort: a ZooKeeper error
    is logged, never raised; the next cycle writes it again)."""
    data = json.dumps(report, separators=(",", ":")).encode()
    try:
        try:
            client.set(paths.last_cycle, data)
        except NoNodeError:
            client.create(paths.last_cycle, data, makepath=True)
    except KazooException as exc:
        log.warning("could not publish the cycle report: %s", exc)


def read_last_cycle(client: KazooClient, paths: ZkPaths) -> dict[str, Any] | None:
    """The last published report as a dict; None when none was published (or it is not a
    JSON object); a stand-in with outcome ``unreadable`` when it is not JSON.

    Raises:
        kazoo.exceptions.KazooException: ZooKeeper could not be read.
    """
    try:
        data, _ = client.retry(client.get, paths.last_cycle)
    except NoNodeError:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return {"outcome": "unreadable", "reason": "the last-cycle znode is not JSON"}
    return value if isinstance(value, dict) else None
