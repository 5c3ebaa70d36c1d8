"""``{root}/last-cycle``: the last assignment cycle's report (JSON), for ``allot status`` and as
one more witness of the epoch (:mod:`allot.cycle.report` builds it).

Failure modes: a cycle publishes its report fenced, in a transaction that checks its lock znode
(:func:`publish_as_holder`: a holder whose session ended publishes nothing and aborts);
:func:`publish_last_cycle` is a plain write, best effort (a ZooKeeper error is logged, never
raised; the next cycle writes it again). Reads retry through ``client.retry``
while SUSPENDED; a report that is not JSON reads as a stand-in with outcome ``unreadable``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss, KazooException, NoNodeError
from kazoo.interfaces import IAsyncResult

from allot.errors import StaleAssignment
from allot.zk.apply import commit_as_holder
from allot.zk.batch import Op
from allot.zk.lock import LockGuard
from allot.zk.paths import ZkPaths

log = logging.getLogger(__name__)


def publish_last_cycle(client: KazooClient, paths: ZkPaths, report: Mapping[str, Any]) -> None:
    """Write a cycle's JSON report to ``{root}/last-cycle`` (best effort: a ZooKeeper error
    is logged, never raised; the next cycle writes it again)."""
    data = _encoded(report)
    try:
        try:
            client.set(paths.last_cycle, data)
        except NoNodeError:
            client.create(paths.last_cycle, data, makepath=True)
    except KazooException as exc:
        log.warning("could not publish the cycle report: %s", exc)


def publish_as_holder(
    client: KazooClient,
    paths: ZkPaths,
    report: Mapping[str, Any],
    guard: LockGuard,
    *,
    release: bool = False,
) -> None:
    """Write a cycle's report in one transaction that ``check``s the holder's lock znode: the
    last thing a cycle writes, and its proof that it still held the lock (a holder frozen past
    its session publishes nothing: the cycle ends ``aborted``). With ``release``, the same
    transaction deletes the lock znode: the lock is released as the report lands.

    Raises:
        LockLost: the guard tripped or the lock znode is gone; nothing written.
        ApplyOutcomeUnknown, AccessDenied: see :func:`allot.zk.apply.commit_ops`.
    """
    data = _encoded(report)
    what = "the cycle report"
    try:
        commit_as_holder(client, Op("set", paths.last_cycle, data), guard, what, release=release)
    except StaleAssignment:  # the first report of this root
        write = Op("create", paths.last_cycle, data)
        commit_as_holder(client, write, guard, what, release=release)


def _encoded(report: Mapping[str, Any]) -> bytes:
    return json.dumps(report, separators=(",", ":")).encode()


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
    return _decoded(data)


def last_cycle_from(
    client: KazooClient, paths: ZkPaths, pending: IAsyncResult
) -> dict[str, Any] | None:
    """:func:`read_last_cycle` from a ``client.get_async(paths.last_cycle)`` sent earlier (to
    share a round trip with other reads); read again, retried, when the connection broke."""
    try:
        data, _ = pending.get()
    except NoNodeError:
        return None
    except ConnectionLoss:
        return read_last_cycle(client, paths)
    return _decoded(data)


def _decoded(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except ValueError:
        return {"outcome": "unreadable", "reason": "the last-cycle znode is not JSON"}
    return value if isinstance(value, dict) else None
