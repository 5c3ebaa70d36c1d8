"""``{root}/last-cycle``: the last assignment cycle's report (JSON), for ``allot status`` and as
one more witness of the epoch (:mod:`allot.cycle.report` builds it).

Failure modes: publishing is a plain, unfenced write and best effort (a ZooKeeper error is
logged, never raised; the next cycle writes it again). Reads retry through ``client.retry``
while SUSPENDED; a report that is not JSON reads as a stand-in with outcome ``unreadable``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError

from allot.zk.paths import ZkPaths

log = logging.getLogger(__name__)


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
