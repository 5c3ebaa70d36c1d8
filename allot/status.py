"""The cluster's state for operators: nodes with their states and buckets, the epoch, the last
cycle. Reads ZooKeeper (membership, assignment, last cycle) and SQL (when nodes left)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from sqlalchemy.orm import Session, sessionmaker

from allot import mirror
from allot.classify import classify
from allot.settings import Settings
from allot.zk.members import read_members
from allot.zk.paths import ZkPaths
from allot.zk.store import AssignmentStore
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
    snapshot = AssignmentStore(client, paths).read_all()
    members = read_members(client, paths)
    with sessions() as session:
        departed = mirror.departed_since(session)
    held = snapshot.buckets_by_node()
    now = utcnow()
    classes = classify(
        {key: node.weight for key, node in members.live.items()},
        held,
        set(snapshot.nodes) | set(snapshot.corrupt),
        departed,
        now,
        settings.node_offline_timeout,
    )
    nodes = []
    for key in sorted(set(classes.live) | set(held) | set(snapshot.corrupt)):
        live = members.live.get(key)
        state = (
            "live" if key in classes.live else "suspect" if key in classes.suspect else "offline"
        )
        nodes.append(
            {
                "node_key": key,
                "state": state,
                "weight": live.weight if live is not None else None,
                "buckets": len(held.get(key, [])),
                "host": live.info.host if live is not None and live.info is not None else None,
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
        "last_cycle": _last_cycle(client, paths),
    }


def _last_cycle(client: KazooClient, paths: ZkPaths) -> dict[str, Any] | None:
    try:
        data, _ = client.get(paths.last_cycle)
    except NoNodeError:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return {"outcome": "unreadable", "reason": "the last-cycle znode is not JSON"}
    return value if isinstance(value, dict) else None
