"""Reading many znodes at once: ZooKeeper's ``multiRead`` (3.6+), else pipelined ``get_async``.

kazoo sends one request per wake-up of its connection thread, so 2,000 pipelined ``get_async``
calls cost about 0.3 ms each in Python (0.6 s for 1,000 nodes' two znodes), even though they
are in flight together. ZooKeeper 3.6 added ``multiRead`` (op code 22): many ``getData`` in one
request, each with its own result or error. kazoo has no API for it, so this module builds the
request with kazoo's own serializers and queues it with ``KazooClient._call`` (the private
method kazoo's ``TransactionRequest`` uses): 2,000 reads then take one round trip (about 40 ms).

Reads go in requests of at most :data:`MAX_OPS_PER_REQUEST` operations (responses stay far
below ``jute.maxbuffer``), all in flight together. If the first ``multiRead`` on a client fails
in any way (an older server, a kazoo without ``_call``), that client falls back to pipelined
``get_async`` for good, logged once; results are the same either way. Like any sequence of
reads, the result is not a transaction: each znode is read as of when the server reached it.
"""

from __future__ import annotations

import logging
import weakref
from collections import namedtuple
from collections.abc import Sequence
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import EXCEPTIONS, NoNodeError
from kazoo.protocol.serialization import (
    GetData,
    MultiHeader,
    ZnodeStat,
    int_struct,
    multiheader_struct,
    read_buffer,
    stat_struct,
)

log = logging.getLogger(__name__)

MAX_OPS_PER_REQUEST = 1_000
"""Reads per ``multiRead`` request (a response is then about 0.2 MB for allot's znodes)."""

_fallback: weakref.WeakSet[KazooClient] = weakref.WeakSet()
_works: weakref.WeakSet[KazooClient] = weakref.WeakSet()


class _MultiRead(namedtuple("_MultiRead", "paths")):
    """kazoo request object for ZooKeeper's ``multiRead`` of ``getData`` operations."""

    type = 22

    def serialize(self) -> bytearray:
        """The request body: one multi header and ``getData`` per path, then the end mark."""
        out = bytearray()
        for path in self.paths:
            out.extend(MultiHeader(GetData.type, False, -1).serialize())
            out.extend(GetData(path, None).serialize())
        out.extend(multiheader_struct.pack(-1, True, -1))
        return out

    @classmethod
    def deserialize(cls, data: bytes, offset: int) -> list[Any]:
        """Per path, ``(data, stat)`` or the exception instance of its error code."""
        results: list[Any] = []
        header, offset = MultiHeader.deserialize(data, offset)
        while not header.done:
            if header.type == GetData.type:
                value, offset = read_buffer(data, offset)
                stat = ZnodeStat._make(stat_struct.unpack_from(data, offset))
                offset += stat_struct.size
                results.append((value, stat))
            elif header.type == -1:
                code = int_struct.unpack_from(data, offset)[0]
                offset += int_struct.size
                results.append(EXCEPTIONS[code]())
            else:
                raise ValueError(f"unexpected multiRead result type {header.type}")
            header, offset = MultiHeader.deserialize(data, offset)
        return results


def use_multi_read(client: KazooClient, enabled: bool) -> None:
    """Turn ``multiRead`` on (the default: tried once, kept if it works) or off for ``client``."""
    if enabled:
        _fallback.discard(client)
    else:
        _fallback.add(client)
        _works.discard(client)


def get_many(client: KazooClient, paths: Sequence[str]) -> list[tuple[bytes, Any] | None]:
    """``(data, stat)`` of every path, in order; None where the znode does not exist.

    Raises:
        kazoo.exceptions.NoAuthError: a read was refused (other per-znode errors likewise).
        kazoo.exceptions.ConnectionLoss: the connection broke (callers retry).
    """
    if not paths:
        return []
    if client not in _fallback:
        try:
            results = _multi_read(client, paths)
        except Exception as exc:
            if client in _works:
                raise  # multiRead worked before on this client: a real failure
            log.info("multiRead unavailable (%s); reading znodes one request each", exc)
            _fallback.add(client)
        else:
            _works.add(client)
            return [_unpack(result) for result in results]
    requests = [client.get_async(path) for path in paths]
    found: list[tuple[bytes, Any] | None] = []
    for request in requests:
        try:
            found.append(request.get())
        except NoNodeError:
            found.append(None)
    return found


def _multi_read(client: KazooClient, paths: Sequence[str]) -> list[Any]:
    chroot = client.chroot or ""
    pending = []
    for start in range(0, len(paths), MAX_OPS_PER_REQUEST):
        chunk = [chroot + path for path in paths[start : start + MAX_OPS_PER_REQUEST]]
        result = client.handler.async_result()
        client._call(_MultiRead(chunk), result)
        pending.append(result)
    results: list[Any] = []
    for result in pending:
        results.extend(result.get())
    if len(results) != len(paths):
        raise ValueError(f"multiRead returned {len(results)} results for {len(paths)} reads")
    return results


def _unpack(result: Any) -> tuple[bytes, Any] | None:
    if isinstance(result, NoNodeError):
        return None
    if isinstance(result, Exception):
        raise result
    return result  # type: ignore[no-any-return]
