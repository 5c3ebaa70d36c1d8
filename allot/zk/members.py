"""Reading membership: which nodes are live, with what info; and a watch on changes.

A node is live while its ephemeral znode ``{root}/nodes/{nodeKey}`` exists and holds allot's
member info naming that key. Reads never fail on bad data: anything else under ``nodes/`` is
not allot's (another program sharing the root, e.g. Amoro's own AMS members
``node-0000000002`` with ``{"host","restBindPort","thriftBindPort"}``, or a hand edit) and is
ignored, reported in :attr:`Members.foreign`; a child whose name is not a valid node key is
reported in :attr:`Members.invalid`. A foreign znode never gets buckets.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.interfaces import IAsyncResult
from kazoo.recipe.watchers import ChildrenWatch

from allot.names import split_node_keys
from allot.zk.client import ensure_layout
from allot.zk.codec import MemberInfo, decode_member_info
from allot.zk.multiread import get_many
from allot.zk.paths import ZkPaths

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveNode:
    """A live node: its published info, the session holding its znode and when the znode was
    created (epoch ms)."""

    node_key: str
    info: MemberInfo
    session_id: int
    registered_at: int

    @property
    def weight(self) -> float:
        """The node's weight (capacity)."""
        return self.info.weight


@dataclass(frozen=True)
class Members:
    """A read of ``{root}/nodes``: ``live`` allot nodes; ``foreign`` children whose data is not
    allot's member info (with the reason; ignored); ``invalid`` child names that are not node
    keys (with the reason; ignored)."""

    live: Mapping[str, LiveNode]
    invalid: Mapping[str, str] = field(default_factory=dict)
    foreign: Mapping[str, str] = field(default_factory=dict)
    version: int = -1
    """The ``cversion`` of ``nodes/`` this read listed (-1: no ``nodes/`` znode)."""

    def ignored(self) -> dict[str, str]:
        """Every child that is not a live allot node, with the reason (for reports)."""
        return {**self.invalid, **self.foreign}


def read_members(
    client: KazooClient, paths: ZkPaths, pending: IAsyncResult | None = None
) -> Members:
    """The live nodes under ``paths.nodes`` (one ``multiRead``; retried on connection loss).

    ``pending``: a ``client.get_children_async(paths.nodes, include_data=True)`` sent earlier,
    so the listing shares a round trip with other reads (used once; a retry lists again).

    Failure modes: SUSPENDED: retried through ``client.retry`` until it gives up
    (``RetryFailedError``); a znode that vanishes between listing and reading is simply not
    live; malformed info and invalid names are reported, never raised.
    """
    sent = [pending]

    def attempt() -> Members:
        listing = sent.pop() if sent else None
        return _read_members(client, paths, listing)

    return client.retry(attempt)  # type: ignore[no-any-return]


def _read_members(client: KazooClient, paths: ZkPaths, pending: IAsyncResult | None) -> Members:
    try:
        if pending is None:
            pending = client.get_children_async(paths.nodes, include_data=True)
        children, parent = pending.get()
    except NoNodeError:
        return Members({})
    keys, invalid = split_node_keys(children)
    live: dict[str, LiveNode] = {}
    foreign: dict[str, str] = {}
    for key, found in zip(keys, get_many(client, [paths.node(k) for k in keys]), strict=True):
        if found is None:
            continue  # gone between listing and reading: not live
        data, stat = found
        try:
            info = _decoded_info(data)
        except ValueError as exc:
            foreign[key] = f"not an allot member ({exc})"
            continue
        if info.node_key != key:
            foreign[key] = f"not an allot member (its info names node key {info.node_key!r})"
            continue
        live[key] = LiveNode(key, info, stat.ephemeralOwner, stat.ctime)
    for key, reason in foreign.items():
        log.warning("ignoring %s: %s", paths.node(key), reason)
    return Members(live, invalid, foreign, parent.cversion)


@functools.lru_cache(maxsize=8192)
def _decoded_info(data: bytes) -> MemberInfo:
    """:func:`~allot.zk.codec.decode_member_info`, remembered by content (a fleet's worth):
    a cycle re-reads every member, and a member's record never changes while it lives."""
    return decode_member_info(data)


class MembershipWatch:
    """Calls ``callback(node_keys)`` with the set of member names now and on every change.

    Wraps kazoo's ``ChildrenWatch``. The callback runs on kazoo's event thread: it must be
    quick (e.g. enqueue a Celery task) and must not block. An exception in it is logged and
    the watch continues.

    Failure modes:
        SUSPENDED / LOST: ``ChildrenWatch`` re-arms itself after a reconnection and in the new
        session, so the cycle keeps being told; changes made while disconnected arrive as one
        call with the set as it is then.
        Stale ephemeral znode of a crashed node: listed until its session expires (it is a
        member until then; the cycle's grace period starts when it goes).
    """

    def __init__(
        self, client: KazooClient, paths: ZkPaths, callback: Callable[[frozenset[str]], None]
    ) -> None:
        ensure_layout(client, paths)
        self._callback = callback
        self._stopped = False
        self._watch = ChildrenWatch(client, paths.nodes, self._on_children)

    def _on_children(self, children: list[str]) -> bool:
        if self._stopped:
            return False
        try:
            self._callback(frozenset(children))
        except Exception:
            log.exception("membership callback failed")
        return True

    def stop(self) -> None:
        """Stop calling the callback (the underlying watch ends on its next event)."""
        self._stopped = True
