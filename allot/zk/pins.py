"""Pins: the persistent znode ``{root}/pins``, JSON ``{"<bucket>": "<node key>"}``, that keeps a
bucket on a node while the node is live (every planner strategy honours it; a pin to a node
that is not live is reported by the plan and placed as if unpinned).

:func:`read_pins` is what every cycle reads (one ``getData``), and ``allot status``. It never
raises for what the znode holds: data that is not a JSON object reads as no pins with
:attr:`Pins.problem` saying why, and an entry whose bucket id or node key is invalid is left
out and reported the same way, so a corrupt znode never blocks a cycle.

:func:`set_pin` and :func:`remove_pin` are version-checked read-modify-writes (a concurrent
change makes them read again, never overwrite it). Starting from a corrupt znode, they keep
the readable entries (none) and replace the rest.

Failure modes: reads and writes go through ``client.retry``, so a suspension is waited out up
to the client's retry policy; a lost session raises (nothing written). The znode is
persistent, so pins outlive every session.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, ConnectionLoss, NodeExistsError, NoNodeError
from kazoo.interfaces import IAsyncResult

from allot.errors import InvalidInput, InvalidNodeKey
from allot.names import validate_node_key
from allot.zk.paths import ZkPaths

_WRITE_ATTEMPTS = 20

_Change = Callable[[dict[int, str]], dict[int, str]]


@dataclass(frozen=True)
class Pins:
    """The pins as read: ``by_bucket`` maps bucket ids to node keys; ``version`` is the
    znode's data version (-1 when there is no znode); ``problem`` says what was unreadable and
    left out (None when everything was read)."""

    by_bucket: dict[int, str]
    version: int = -1
    problem: str | None = None


def decode_pins(data: bytes | None, bucket_count: int | None = None) -> Pins:
    """The pins stored in ``data`` (version left at -1); never raises."""
    if not data:
        return Pins({})
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Pins({}, problem=f"pins are not JSON ({exc}); no bucket is pinned")
    if not isinstance(value, dict):
        return Pins({}, problem="pins are not a JSON object; no bucket is pinned")
    pins: dict[int, str] = {}
    bad: list[str] = []
    for key, node in value.items():
        if not (key.isascii() and key.isdigit()) or key != str(int(key)) or int(key) < 1:
            bad.append(f"{key!r} is not a bucket id")
        elif bucket_count is not None and int(key) > bucket_count:
            bad.append(f"bucket {key} is out of range 1..{bucket_count}")
        elif not isinstance(node, str):
            bad.append(f"bucket {key}: {node!r} is not a node key")
        else:
            try:
                pins[int(key)] = validate_node_key(node)
            except InvalidNodeKey:
                bad.append(f"bucket {key}: {node!r} is not a node key")
    problem = f"pins ignored: {'; '.join(bad)}" if bad else None
    return Pins(dict(sorted(pins.items())), problem=problem)


def encode_pins(pins: dict[int, str]) -> bytes:
    """The bytes of ``{root}/pins`` (compact JSON, bucket ids ascending as strings)."""
    value = {str(bucket): pins[bucket] for bucket in sorted(pins)}
    return json.dumps(value, separators=(",", ":")).encode("ascii")


def read_pins(
    client: KazooClient,
    paths: ZkPaths,
    bucket_count: int | None = None,
    pending: IAsyncResult | None = None,
) -> Pins:
    """The pins in ``{root}/pins`` (no znode: none). With ``bucket_count``, pins of buckets
    outside ``1..bucket_count`` are reported and left out. ``pending``: a
    ``client.get_async(paths.pins)`` sent earlier, so the read shares a round trip with others
    (a connection lost meanwhile reads again).

    Raises:
        kazoo.exceptions.KazooException: ZooKeeper could not be read.
    """
    try:
        found = None
        if pending is not None:
            with contextlib.suppress(ConnectionLoss):  # read again below
                found = pending.get()
        data, stat = found or client.retry(client.get, paths.pins)
    except NoNodeError:
        return Pins({})
    pins = decode_pins(data, bucket_count)
    return Pins(pins.by_bucket, stat.version, pins.problem)


def set_pin(client: KazooClient, paths: ZkPaths, bucket: int, node_key: str) -> Pins:
    """Pin ``bucket`` to ``node_key`` (replacing any pin of that bucket); the pins written.

    Raises:
        InvalidInput: ``bucket`` is not positive; InvalidNodeKey: ``node_key`` is invalid.
        kazoo.exceptions.KazooException: ZooKeeper refused or stayed unreachable.
    """
    if bucket < 1:
        raise InvalidInput(f"bucket {bucket} is not a bucket id (1 or more)")
    node_key = validate_node_key(node_key)
    return _update(client, paths, lambda pins: pins | {bucket: node_key})


def remove_pin(client: KazooClient, paths: ZkPaths, bucket: int) -> Pins:
    """Remove the pin of ``bucket`` (nothing to do when it has none); the pins written.

    Raises:
        kazoo.exceptions.KazooException: ZooKeeper refused or stayed unreachable.
    """
    return _update(client, paths, lambda pins: {b: n for b, n in pins.items() if b != bucket})


def _update(client: KazooClient, paths: ZkPaths, change: _Change) -> Pins:
    for _ in range(_WRITE_ATTEMPTS):
        current = read_pins(client, paths)
        wanted = change(dict(current.by_bucket))
        if wanted == current.by_bucket and current.problem is None:
            return current
        data = encode_pins(wanted)
        try:
            if current.version < 0:
                client.retry(client.create, paths.pins, data, makepath=True)
                version = 0
            else:
                stat = client.retry(client.set, paths.pins, data, version=current.version)
                version = stat.version
        except (BadVersionError, NodeExistsError, NoNodeError):
            continue  # changed meanwhile: read again
        return Pins(dict(sorted(wanted.items())), version)
    raise BadVersionError(f"{paths.pins} kept changing; try again")
