"""``{root}/last-cycle``: the last assignment cycle's report (JSON), for ``allot status`` and as
one more witness of the epoch (:mod:`allot.cycle.report` builds it).

Failure modes: publishing is a plain, unfenced write and best effort (a ZooKeeper error is
logged, never raised; the next cycle writes it again). Reads retry through ``client.retry``
while SUSPENDED; a report that is not JSON reads as a stand-in with outcome ``unreadable``.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss, KazooException, NoNodeError
from kazoo.interfaces import IAsyncResult

from allot.zk.paths import ZkPaths

log = logging.getLogger(__name__)


def publish_last_cycle(
    client: KazooClient, paths: ZkPaths, report: Mapping[str, Any], *, wait: bool = True
) -> None:
    """Write a cycle's JSON report to ``{root}/last-cycle`` (best effort: a ZooKeeper error
    is logged, never raised; the next cycle writes it again).

    ``wait=False`` sends the write without waiting for its answer: one session's requests
    are answered in order, so whatever the caller sends next (the lock's release) lands after
    it, and a reader that sees the lock released sees this report (a missing znode is created
    when the answer says so, after what the caller sent meanwhile).
    """
    data = json.dumps(report, separators=(",", ":")).encode()
    try:
        if not wait:
            client.set_async(paths.last_cycle, data).rawlink(
                functools.partial(_answered, client, paths.last_cycle, data)
            )
            return
        try:
            client.set(paths.last_cycle, data)
        except NoNodeError:
            client.create(paths.last_cycle, data, makepath=True)
    except KazooException as exc:
        log.warning("could not publish the cycle report: %s", exc)


def _answered(client: KazooClient, path: str, data: bytes, result: IAsyncResult) -> None:
    """On kazoo's thread: create a missing znode (not waited for either), log a failure."""
    try:
        result.get()
    except NoNodeError:
        client.create_async(path, data, makepath=True).rawlink(_logged)
    except KazooException as exc:
        log.warning("could not publish the cycle report: %s", exc)


def _logged(result: IAsyncResult) -> None:
    try:
        result.get()
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
