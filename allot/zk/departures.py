"""``{root}/departures``: when each node that is gone but still holds an entry was first seen
gone (the start of its grace period), so the cycle never needs SQL to tell a suspect node from
an offline one (DESIGN.md: "ZooKeeper alone decides").

Stored as JSON ``{"node_key": ms, ...}``. Written only by the lock holder, in one transaction
that ``check``s the holder's lock znode and the data version read
(:func:`~allot.zk.apply.commit_as_holder`), so a holder whose session ended writes nothing, and
a concurrent writer makes the write fail (:class:`~allot.errors.StaleAssignment`) instead of
being overwritten.

Failure modes:
    SUSPENDED: reads retry through ``client.retry``; a write checks the guard first and raises
    :class:`~allot.errors.LockLost` when it tripped; a commit cut by a lost connection raises
    :class:`~allot.errors.ApplyOutcomeUnknown` (a repeat of the write is harmless).
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

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss, NoNodeError
from kazoo.interfaces import IAsyncResult
from kazoo.protocol.states import ZnodeStat

from allot.errors import InvalidNodeKey
from allot.names import validate_node_key
from allot.zk.apply import commit_as_holder
from allot.zk.batch import Op
from allot.zk.lock import LockGuard
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
    return _decoded(paths, data, stat)


def departures_from(client: KazooClient, paths: ZkPaths, pending: IAsyncResult) -> Departures:
    """The departures a ``client.get_async(departures_path(paths))`` sent earlier read (sent
    early so it shares a round trip with other reads); read again, retried, when the
    connection broke meanwhile."""
    try:
        data, stat = pending.get()
    except NoNodeError:
        return Departures()
    except ConnectionLoss:
        return read_departures(client, paths)
    return _decoded(paths, data, stat)


def _decoded(paths: ZkPaths, data: bytes, stat: ZnodeStat) -> Departures:
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
    commit_as_holder(client, write, guard, "the departures")
