"""The cluster's state for operators: nodes with their states and buckets, the epoch, the last
cycle. Reads ZooKeeper (membership, assignment, last cycle) and SQL (when nodes left) through
:func:`allot.observe.observe`, as the assignment cycle does."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kazoo.client import KazooClient
from sqlalchemy.orm import Session, sessionmaker

from allot.observe import observe
from allot.settings import Settings
from allot.zk.paths import ZkPaths
from allot.zk.records import read_last_cycle
from models.base import utcnow


def cluster_status(
    client: KazooClient, sessions: sessionmaker[Session], settings: Settings
) -> dict[str, Any]:
    """A JSON-able picture of the cluster now.

    Keys: ``epoch``, ``plan_id``, ``applied_at`` (ISO time), ``bucket_count``, ``unowned``
    (bucket count nobody holds), ``nodes`` (one entry per node: ``node_key``, ``state``,
    ``weight``, ``buckets``, ``host``, ``offline_in`` seconds for suspects), ``corrupt`` and
    ``last_cycle`` (the last cycle's report, or None).
    """
    paths = ZkPaths(settings.zk_root)
    seen = observe(
        client, paths, sessions, now=utcnow(), offline_timeout=settings.node_offline_timeout,
        bucket_count=settings.bucket_count,
    )  # fmt: skip
    snapshot, held, classes = seen.snapshot, seen.held, seen.classes
    nodes = []
    for key in sorted(set(classes.live) | set(held) | set(snapshot.corrupt)):
        live = seen.members.live.get(key)
        nodes.append(
            {
                "node_key": key,
                "state": classes.state_of(key).value,
                "weight": live.weight if live is not None else None,
                "buckets": len(held.get(key, [])),
                "host": live.info.host if live is not None else None,
                "offline_in": round(classes.suspect[key], 1) if key in classes.suspect else None,
            }
        )
    owned = sum(len(buckets) for buckets in held.values())
    version = snapshot.version
    applied_at = (
        dt.datetime.fromtimestamp(version.applied_at / 1000, dt.UTC).isoformat()
        if version.applied_at
        else None
    )
    return {
        "epoch": version.epoch,
        "plan_id": version.plan_id,
        "applied_at": applied_at,
        "bucket_count": settings.bucket_count,
        "unowned": max(settings.bucket_count - owned, 0),
        "nodes": nodes,
        "corrupt": dict(snapshot.corrupt),
        "last_cycle": read_last_cycle(client, paths),
    }
