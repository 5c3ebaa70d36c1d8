"""The cluster's state for operators: nodes with their states, buckets, tables, backlog and
load, the epoch, the buckets nobody works, the heaviest buckets, the pins, the last cycle. Reads
ZooKeeper (membership, assignment) and SQL (when nodes left) through
:func:`allot.cycle.observe.observe`, as the assignment cycle does, the leases through
:func:`allot.zk.leases.read_leases`, the measured load and the pins through
:func:`allot.zk.load.read_load` and :func:`allot.zk.pins.read_pins` (spread over the nodes by
:mod:`allot.inspect.load`), the last cycle's report, plus the tables per bucket from SQL and the
bucket queues' backlog from Redis (:mod:`allot.inspect.backlog`).

Failure modes: a ZooKeeper or SQL error propagates (the CLI turns it into one line); Redis
out of reach only makes the backlog unknown (``None``, with ``backlog_error`` saying why).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kazoo.client import KazooClient
from redis import Redis, RedisError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from allot.cycle.observe import observe
from allot.inspect.backlog import bucket_backlog
from allot.inspect.load import LoadSpread, load_spread, rounded
from allot.settings import Settings
from allot.zk.last_cycle import read_last_cycle
from allot.zk.leases import read_leases
from allot.zk.load import read_load
from allot.zk.paths import ZkPaths
from allot.zk.pins import read_pins
from models.base import utcnow
from models.schema import Bucket


def cluster_status(
    client: KazooClient,
    sessions: sessionmaker[Session],
    settings: Settings,
    redis: Redis | None = None,
) -> dict[str, Any]:
    """A JSON-able picture of the cluster now; ``redis`` is the broker's Redis (None: the
    broker is not Redis, the backlog is unknown).

    Keys: ``epoch``, ``plan_id``, ``applied_at`` (ISO time), ``bucket_count``, ``unowned``
    (bucket count nobody holds), ``without_lease`` (the held buckets without a lease
    ``{root}/leases/{id}``: no node works their tables now; children that are no bucket id are
    ignored, ``allot verify`` reports them), ``nodes`` (one entry per node:
    ``node_key``, ``state``, ``weight``, ``buckets``, ``tables`` in its buckets, ``backlog``
    (messages waiting in its buckets' queues, None when unknown), ``host``, ``offline_in``
    seconds for suspects, ``load``: seconds of table work in its buckets over the load window,
    ``share`` and ``ratio``: its fair share of the load and ``load / share``, for live nodes
    only; see :mod:`allot.inspect.load`), ``backlog_error`` (why the backlog is unknown, or
    None), ``corrupt``, ``load`` (the cluster's: ``window`` seconds, ``strategy``,
    ``tolerance``, ``ratio`` or None without load, ``total`` seconds the live nodes share,
    ``measured`` buckets, ``mean`` (what an unmeasured bucket counts as), ``heaviest`` (the
    measured buckets with the most load: ``bucket``, ``load``, ``owner``, ``pinned_to``) and
    ``problems`` (load entries left out)), ``pins`` (``bucket``, ``node``, whether that node is
    ``live``, the bucket's ``owner``), ``pins_problem`` (pins left out, or None) and
    ``last_cycle`` (the last cycle's report, or None).
    """
    paths = ZkPaths(settings.zk_root)
    seen = observe(
        client,
        paths,
        sessions,
        now=utcnow(),
        offline_timeout=settings.node_offline_timeout,
        bucket_count=settings.bucket_count,
    )
    snapshot, held, classes = seen.snapshot, seen.held, seen.classes
    owned_ids = sorted(bucket for buckets in held.values() for bucket in buckets)
    tables = _tables_per_bucket(sessions)
    backlog, backlog_error = _backlog(redis, settings.cluster, owned_ids)
    leases = client.retry(read_leases, client, paths)
    leased = frozenset() if leases is None else leases.buckets
    measured = client.retry(read_load, client, paths, settings.bucket_count)
    pins = read_pins(client, paths, settings.bucket_count)
    spread = load_spread(
        settings.bucket_count, measured.by_bucket, held, classes.live, classes.suspect
    )
    owner = {bucket: key for key, buckets in held.items() for bucket in buckets}
    nodes = []
    for key in sorted(set(classes.live) | set(held) | set(snapshot.corrupt)):
        live = seen.members.live.get(key)
        mine = held.get(key, [])
        nodes.append(
            {
                "node_key": key,
                "state": classes.state_of(key).value,
                "weight": live.weight if live is not None else None,
                "buckets": len(mine),
                "tables": sum(tables.get(bucket, 0) for bucket in mine),
                "backlog": None if backlog is None else sum(backlog[bucket] for bucket in mine),
                "host": live.info.host if live is not None else None,
                "offline_in": round(classes.suspect[key], 1) if key in classes.suspect else None,
                **_node_load(spread, key),
            }
        )
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
        "unowned": max(settings.bucket_count - len(owned_ids), 0),
        "without_lease": [bucket for bucket in owned_ids if bucket not in leased],
        "nodes": nodes,
        "backlog_error": backlog_error,
        "corrupt": dict(snapshot.corrupt),
        "load": {
            "window": settings.load_window,
            "strategy": settings.strategy,
            "tolerance": settings.load_tolerance,
            "ratio": rounded(spread.ratio),
            "total": rounded(spread.total),
            "measured": len(spread.measured),
            "mean": rounded(spread.mean),
            "heaviest": [
                {
                    "bucket": bucket,
                    "load": rounded(seconds),
                    "owner": owner.get(bucket),
                    "pinned_to": pins.by_bucket.get(bucket),
                }
                for bucket, seconds in spread.heaviest()
            ],
            "problems": list(measured.problems),
        },
        "pins": [
            {
                "bucket": bucket,
                "node": node,
                "live": node in classes.live,
                "owner": owner.get(bucket),
            }
            for bucket, node in sorted(pins.by_bucket.items())
        ],
        "pins_problem": pins.problem,
        "last_cycle": read_last_cycle(client, paths),
    }


def _node_load(spread: LoadSpread, key: str) -> dict[str, float | None]:
    """A node's ``load``, ``share`` and ``ratio`` (:mod:`allot.inspect.load`), rounded."""
    node = spread.nodes.get(key)
    if node is None:
        return {"load": 0.0, "share": None, "ratio": None}
    return {
        "load": rounded(node.load),
        "share": rounded(node.share),
        "ratio": rounded(node.ratio),
    }


def _tables_per_bucket(sessions: sessionmaker[Session]) -> dict[int, int]:
    """The number of tables registered in each bucket (``bucket.table_count``)."""
    with sessions() as session:
        rows = session.execute(select(Bucket.bucket_id, Bucket.table_count)).tuples().all()
    return dict(rows)


def _backlog(
    redis: Redis | None, cluster: str, bucket_ids: list[int]
) -> tuple[dict[int, int] | None, str | None]:
    """The backlog of each bucket queue, or None and the reason it is unknown."""
    if redis is None:
        return None, "the broker is not Redis"
    try:
        return bucket_backlog(redis, cluster, bucket_ids), None
    except RedisError as exc:
        return None, f"cannot read the bucket queues from Redis: {exc}"
