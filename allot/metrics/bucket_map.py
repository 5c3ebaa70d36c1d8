"""The bucket map: a page showing, at a glance, which node holds each bucket.

The buckets as a grid coloured by owner, shaded by their measured load (the heaviest darkest),
pinned buckets, the buckets of a suspect node and unowned buckets marked; each node's buckets
and load against its weighted shares; the last cycles and their moves. The page
(``/map``) polls ``/map.json`` every two seconds, so a join or a failover shows as it happens.
Both are served by a worker's metrics server (:func:`allot.metrics.serve_metrics`) behind the
credentials of Flower (``FLOWER_BASIC_AUTH``, ``user:password`` pairs separated by commas):
without them the page is refused, never served open.

Failure modes: a ZooKeeper or SQL error while reading answers 503 with the reason (the page
shows it and keeps polling); nothing is cached, every poll is a fresh read.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any

from kazoo.client import KazooClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from allot.cycle.observe import observe
from allot.errors import ZooKeeperUnavailable
from allot.inspect.load import load_spread, rounded
from allot.settings import Settings
from allot.zk.load import read_load
from allot.zk.paths import ZkPaths
from allot.zk.pins import read_pins
from models.base import utcnow
from models.schema import Plan as PlanRow

log = logging.getLogger(__name__)

LAST_CYCLES = 8
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def bucket_map(
    client: KazooClient, sessions: sessionmaker[Session], settings: Settings
) -> dict[str, Any]:
    """The picture the page draws: ``buckets`` (one entry per bucket id: ``owner`` or None,
    ``state`` of the owner or ``unowned``, ``load``: its measured seconds over the load window
    or None when unmeasured, ``pinned``: the node it is pinned to or None), ``nodes``
    (``node_key``, ``state``, ``weight``, ``buckets``, ``share``: the buckets its weight
    entitles it to among the live nodes, ``load`` in seconds, and for live nodes
    ``load_share`` and ``ratio``, as ``allot status`` has them), ``load`` (``ratio``,
    ``tolerance``, ``strategy``, ``window``, ``measured`` buckets, ``mean``: what an unmeasured
    bucket counts as, ``max``: the largest measured bucket load, 0 without any), ``cycles``
    (the last plans, newest first), ``epoch`` and ``at``.

    Raises:
        ZooKeeperUnavailable: this process's ZooKeeper session is not connected.
        kazoo.exceptions.KazooException, sqlalchemy.exc.SQLAlchemyError: a read failed.
    """
    if not client.connected:  # a read would wait for the connection and hold the request
        raise ZooKeeperUnavailable("ZooKeeper is not connected")
    seen = observe(
        client,
        ZkPaths(settings.zk_root),
        sessions,
        now=utcnow(),
        offline_timeout=settings.node_offline_timeout,
        bucket_count=settings.bucket_count,
    )
    classes = seen.classes
    owner = {bucket: key for key, held in seen.held.items() for bucket in held}
    weights = {key: float(weight) for key, weight in classes.live.items()}
    total = sum(weights.values())
    paths = ZkPaths(settings.zk_root)
    measured = client.retry(read_load, client, paths, settings.bucket_count)
    pins = read_pins(client, paths, settings.bucket_count).by_bucket
    load = load_spread(
        settings.bucket_count, measured.by_bucket, seen.held, weights, classes.suspect
    )
    nodes = [
        {
            "node_key": key,
            "state": classes.state_of(key).value,
            "weight": weights.get(key),
            "buckets": len(seen.held.get(key, [])),
            "share": round(settings.bucket_count * weights[key] / total, 2)
            if key in weights and total
            else 0.0,
            "load": round(load.nodes[key].load, 3),
            "load_share": rounded(load.nodes[key].share),
            "ratio": rounded(load.nodes[key].ratio),
        }
        for key in sorted(set(weights) | set(seen.held))
    ]
    buckets = [
        {
            "id": bucket,
            "owner": owner.get(bucket),
            "state": classes.state_of(owner[bucket]).value if bucket in owner else "unowned",
            "load": rounded(load.measured.get(bucket)),
            "pinned": pins.get(bucket),
        }
        for bucket in range(1, settings.bucket_count + 1)
    ]
    with sessions() as session:
        plans = session.scalars(
            select(PlanRow).order_by(PlanRow.created_at.desc()).limit(LAST_CYCLES)
        ).all()
        cycles = [
            {
                "plan_id": plan.plan_id[:12],
                "trigger": plan.trigger,
                "status": plan.status,
                "moves": plan.moves,
                "epoch": plan.epoch,
                "at": plan.created_at.isoformat(timespec="seconds"),
            }
            for plan in plans
        ]
    return {
        "epoch": seen.snapshot.version.epoch,
        "at": utcnow().isoformat(timespec="seconds"),
        "nodes": nodes,
        "buckets": buckets,
        "load": {
            "ratio": rounded(load.ratio),
            "tolerance": settings.load_tolerance,
            "strategy": settings.strategy,
            "window": settings.load_window,
            "measured": len(load.measured),
            "mean": round(load.mean, 3),
            "max": round(max(load.measured.values(), default=0.0), 3),
        },
        "cycles": cycles,
    }


def credentials(value: str | None) -> list[tuple[str, str]]:
    """The ``user:password`` pairs of a ``FLOWER_BASIC_AUTH`` value (comma-separated)."""
    pairs = []
    for item in (value or "").split(","):
        user, separator, password = item.strip().partition(":")
        if separator and user:
            pairs.append((user, password))
    return pairs


def authorized(header: str | None, allowed: list[tuple[str, str]]) -> bool:
    """Whether an ``Authorization: Basic ...`` header names one of ``allowed``."""
    if not header or not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    given = f"{user}:{password}".encode()
    return any(hmac.compare_digest(given, f"{u}:{p}".encode()) for u, p in allowed)


def map_app(read: Callable[[], dict[str, Any]], auth: str | None) -> WsgiApp:
    """The WSGI app of ``/map`` (the page) and ``/map.json`` (``read()``), behind ``auth``
    (a ``FLOWER_BASIC_AUTH`` value; None or empty: every request is refused)."""
    allowed = credentials(auth)
    page = resources.files("allot.metrics").joinpath("bucket_map.html").read_bytes()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def send(status: str, body: bytes, kind: str, *extra: tuple[str, str]) -> list[bytes]:
            headers = [("Content-Type", kind), ("Cache-Control", "no-store"), *extra]
            start_response(status, headers)
            return [body]

        if not allowed:
            return send(
                "403 Forbidden",
                b"the bucket map needs FLOWER_BASIC_AUTH on this worker\n",
                "text/plain; charset=utf-8",
            )
        if not authorized(environ.get("HTTP_AUTHORIZATION"), allowed):
            challenge = ("WWW-Authenticate", 'Basic realm="allot"')
            return send("401 Unauthorized", b"credentials needed\n", "text/plain", challenge)
        path = environ.get("PATH_INFO", "")
        if path == "/map":
            return send("200 OK", page, "text/html; charset=utf-8")
        if path == "/map.json":
            try:
                body = json.dumps(read()).encode()
            except Exception as exc:  # a read failed: say so, the page keeps polling
                log.warning("bucket map: %s", exc)
                return send(
                    "503 Service Unavailable",
                    json.dumps({"error": str(exc)}).encode(),
                    "application/json",
                )
            return send("200 OK", body, "application/json")
        return send("404 Not Found", b"not found\n", "text/plain")

    return app
