"""Bucket load in ZooKeeper: each node's measured seconds of table work per bucket, published
as one ephemeral znode ``{root}/load/{nodeKey}`` (:func:`publish_load`, :class:`LoadPublisher`)
and summed over nodes by :func:`read_load` (one listing and one ``multiRead``).

A node's znode holds compact JSON ``{"window": s, "at": ms, "buckets": {"<id>": seconds}}``:
the seconds its runs of each bucket took over the last ``window`` seconds as of ``at``, for
every bucket it ran work for in that window, owned now or not (a bucket that just moved is
measured by both its donor and its receiver until the donor's window forgets it). The measure
itself is :mod:`allot.work.load`.

Bounds: a reading is at most one publish interval (``ALLOT_LOAD_PUBLISH_INTERVAL``) stale; a
restarted node starts with an empty window, so its buckets' load is under-counted for up to
``ALLOT_LOAD_WINDOW`` after it starts; a node whose session ends loses its znode (its buckets
read as unmeasured until it publishes again).

Failure modes: the znode is ephemeral, so it disappears with its session and
:class:`LoadPublisher` creates it again on the next publish in a new session; a znode left by
a previous session of the same node key (a restart within the session timeout) is deleted and
recreated under the new session so it does not vanish later. Publishing is best effort and
unfenced (a ZooKeeper error is logged, the next publish tries again). Reading never raises for
what the znodes hold: a child that is no node key, data that is not the expected JSON, a bucket
id out of range or a negative number is listed in :attr:`BucketLoad.problems` and left out.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeGuard

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.protocol.states import KazooState

from allot.errors import InvalidNodeKey
from allot.names import validate_node_key
from allot.zk.codec import now_ms
from allot.zk.multiread import get_many
from allot.zk.paths import ZkPaths

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeLoad:
    """One node's published load: ``buckets`` (seconds per bucket id) over ``window`` seconds,
    as of ``at`` (epoch ms)."""

    window: float
    at: int
    buckets: dict[int, float]


def encode_load(window: float, at: int, buckets: Mapping[int, float]) -> bytes:
    """The bytes of a node's load znode (compact JSON, bucket ids ascending as strings)."""
    value = {
        "window": window,
        "at": at,
        "buckets": {str(bucket): round(buckets[bucket], 3) for bucket in sorted(buckets)},
    }
    return json.dumps(value, separators=(",", ":")).encode("ascii")


def decode_load(data: bytes | None, bucket_count: int | None = None) -> tuple[NodeLoad, list[str]]:
    """A node's load from its znode's bytes, and the problems of entries left out (a bucket id
    that is not a decimal in ``1..bucket_count``, seconds that are not a finite number >= 0).

    Raises:
        ValueError: the data as a whole is not the expected JSON object.
    """
    if data is None:
        raise ValueError("no data")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    window, at, raw = value.get("window"), value.get("at"), value.get("buckets")
    if not _number(window) or window <= 0:
        raise ValueError(f'"window" must be a positive number, got {window!r}')
    if not isinstance(at, int) or isinstance(at, bool):
        raise ValueError(f'"at" must be epoch milliseconds, got {at!r}')
    if not isinstance(raw, dict):
        raise ValueError('"buckets" must be a JSON object')
    buckets: dict[int, float] = {}
    problems: list[str] = []
    for key, seconds in raw.items():
        if not (key.isascii() and key.isdigit()) or key != str(int(key)) or int(key) < 1:
            problems.append(f"bucket id {key!r} is not a bucket id")
        elif bucket_count is not None and int(key) > bucket_count:
            problems.append(f"bucket {key} is out of range 1..{bucket_count}")
        elif not _number(seconds) or seconds < 0:
            problems.append(f"bucket {key}: {seconds!r} is not a number of seconds >= 0")
        else:
            buckets[int(key)] = float(seconds)
    return NodeLoad(float(window), at, buckets), problems


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class BucketLoad:
    """The load of every measured bucket, summed over the nodes that published it.

    ``by_bucket``: seconds of table work per bucket id (buckets nobody measured are absent:
    the planner counts them as the mean); ``by_node``: each readable node's own publication;
    ``problems``: one line per child or entry left out (never raised).
    """

    by_bucket: dict[int, float] = field(default_factory=dict)
    by_node: dict[str, NodeLoad] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    def node_total(self, node_key: str) -> float:
        """The seconds node ``node_key`` measured over its window (0 when it published none)."""
        published = self.by_node.get(node_key)
        return 0.0 if published is None else sum(published.buckets.values())


def read_load(client: KazooClient, paths: ZkPaths, bucket_count: int | None = None) -> BucketLoad:
    """List ``{root}/load`` and read every node's load in one ``multiRead``; an empty
    :class:`BucketLoad` when nothing was published. With ``bucket_count``, bucket ids outside
    ``1..bucket_count`` are reported and left out.

    Makes no retry of its own: wrap it in ``client.retry`` where a suspension should be waited
    out.

    Raises:
        kazoo.exceptions.KazooException: ZooKeeper could not be read.
    """
    try:
        names = sorted(client.get_children(paths.load))
    except NoNodeError:
        return BucketLoad()
    problems: list[str] = []
    keys: list[str] = []
    for name in names:
        try:
            keys.append(validate_node_key(name))
        except InvalidNodeKey:
            problems.append(f"load/{name}: not a node key, ignored")
    found = get_many(client, [paths.load_of(key) for key in keys])
    by_bucket: dict[int, float] = {}
    by_node: dict[str, NodeLoad] = {}
    for key, hit in zip(keys, found, strict=True):
        if hit is None:
            continue  # its session ended between the listing and the read
        try:
            published, bad = decode_load(hit[0], bucket_count)
        except ValueError as exc:
            problems.append(f"load/{key}: {exc}, ignored")
            continue
        problems.extend(f"load/{key}: {line}, ignored" for line in bad)
        by_node[key] = published
        for bucket, seconds in published.buckets.items():
            by_bucket[bucket] = by_bucket.get(bucket, 0.0) + seconds
    return BucketLoad(by_bucket, by_node, tuple(problems))


def publish_load(
    client: KazooClient,
    paths: ZkPaths,
    node_key: str,
    window: float,
    buckets: Mapping[int, float],
    *,
    at: int | None = None,
) -> None:
    """Write ``node_key``'s load to its ephemeral znode ``{root}/load/{nodeKey}`` under this
    client's session, creating it (and ``{root}/load``) when missing and replacing one a
    previous session left.

    Raises:
        kazoo.exceptions.KazooException: ZooKeeper refused or the connection broke.
    """
    path = paths.load_of(node_key)
    data = encode_load(window, now_ms() if at is None else at, buckets)
    session = client.client_id[0] if client.client_id else None
    try:
        stat = client.exists(path)
        if stat is not None and stat.ephemeralOwner == session:
            client.set(path, data, version=stat.version)
            return
        if stat is not None:
            client.delete(path, version=stat.version)  # a previous session's znode
        client.create(path, data, ephemeral=True, makepath=True)
    except NodeExistsError:
        raise KazooException(f"{path} was created by another session meanwhile") from None


class LoadPublisher:
    """Publishes one node's load, only when it changed since the last publish in this session.

    Failure modes: while the client is not connected nothing is written (the next call
    publishes); a ZooKeeper error is logged and forgotten, so the next call writes again; after
    a session loss the znode is gone and the next call creates it (the session id is part of
    what "changed" compares).
    """

    def __init__(self, client: KazooClient, paths: ZkPaths, node_key: str) -> None:
        self.client = client
        self.paths = paths
        self.node_key = validate_node_key(node_key)
        self._last: tuple[object, float, dict[int, float]] | None = None

    def publish(self, window: float, buckets: Mapping[int, float]) -> bool:
        """Publish ``buckets`` over ``window`` unless that is what this session last
        published; True when it wrote."""
        if self.client.state != KazooState.CONNECTED:
            return False
        rounded = {bucket: round(seconds, 3) for bucket, seconds in buckets.items()}
        current = (self.client.client_id, float(window), rounded)
        if current == self._last:
            return False
        try:
            publish_load(self.client, self.paths, self.node_key, window, rounded)
        except KazooException as exc:
            log.warning("could not publish the load of %s: %s", self.node_key, exc)
            self._last = None
            return False
        self._last = current
        return True
