"""The tokens of this node's leases, shared by a worker's main process and its pool processes.

A process runs and commits a bucket's work under the token of the lease *its own node* holds,
never under a token read back from SQL: a frozen process that shares its successor's node key
would read the successor's token there and pass its fence (``docs/table-work.md``, case 12).
The leases live in the worker's main process (:class:`~allot.work.leases.BucketWork`); the
runs, in its prefork pool processes (:func:`allot.work.run.execute`). :class:`TokenTable` is
what joins them: one slot per bucket, holding the token of a bucket this node serves, 0 for
any other.

The table is one anonymous shared mapping (``mmap`` of ``-1``: ``MAP_SHARED |
MAP_ANONYMOUS``), created by :func:`share_node_tokens` in the main process before the pool
starts (Celery's ``worker_init``, ``tasks/node.py``). Celery's prefork pool (billiard, start
method ``fork``) forks its processes from the main process, at start and again whenever one
dies or is recycled: each inherits the mapping and sees every later write of the main process.
A pool process that finds no table (a pool started with ``spawn``, a table that could not be
made) gets :class:`NoTokens` (:func:`require_node_tokens`): it runs no table work rather than
trust SQL's token.

Safe across processes without a lock:

- one writer: only the main process writes (the lease loop and kazoo's state listener; a
  ``threading.Lock`` orders the two); pool processes only read;
- one word per slot: slot ``b`` is the 8-byte word at offset ``8 * b`` of a page-aligned
  mapping, read and written whole through a ``memoryview`` of format ``q`` (CPython copies it
  with one fixed-size 8-byte ``memcpy``, compiled to one load or store on 64-bit targets), and
  an aligned 8-byte load or store is single-copy atomic on x86-64 and AArch64: a reader sees
  the old value or the new one, never a mix. The table refuses to exist on a 32-bit Python;
- nothing else is ordered with a slot, and nothing needs to be: a reader that sees a change an
  instant late acts as a task that had started an instant earlier, and its commit is still
  checked by the fence (``docs/table-work.md``, F).
"""

from __future__ import annotations

import logging
import mmap
import sys
import threading
from typing import Protocol

log = logging.getLogger(__name__)

SLOT_BYTES = 8


class TokenSource(Protocol):
    """Where a run finds the token of its node's lease of a bucket."""

    def token(self, bucket: int) -> int:
        """The token under which this node serves ``bucket``, or 0 when it does not."""
        ...


class NoTokens:
    """The tokens of a pool process that inherited none: it serves no bucket."""

    def token(self, bucket: int) -> int:
        """Always 0: no run of any bucket starts here."""
        return 0


class TokenTable:
    """Bucket -> the token of this node's lease of it (0: this node does not serve it), in
    memory shared with the processes forked after it was created (see the module docstring).

    Written by the process that holds the leases (:meth:`hold`, :meth:`forget`,
    :meth:`forget_all`), read by any (:meth:`token`). Buckets outside ``1..bucket_count`` have
    no slot: their token is always 0.
    """

    def __init__(self, bucket_count: int) -> None:
        if sys.maxsize < 2**63 - 1:
            raise RuntimeError("the shared token table needs a 64-bit Python (atomic 8-byte slots)")
        if bucket_count < 1:
            raise ValueError(f"bucket count must be positive, not {bucket_count}")
        self.bucket_count = bucket_count
        self._memory = mmap.mmap(-1, SLOT_BYTES * (bucket_count + 1))  # zero-filled, shared
        self._slots = memoryview(self._memory).cast("q")
        self._write = threading.Lock()

    def token(self, bucket: int) -> int:
        """The token under which this node serves ``bucket``, or 0 when it does not."""
        if not 1 <= bucket <= self.bucket_count:
            return 0
        return int(self._slots[bucket])

    def held(self) -> dict[int, int]:
        """Bucket -> token, for every bucket this node serves."""
        return {b: t for b in range(1, self.bucket_count + 1) if (t := self.token(b)) != 0}

    def hold(self, bucket: int, token: int) -> None:
        """Serve ``bucket`` under ``token`` (a lease's ``czxid``, > 0) from now on.

        Raises:
            ValueError: ``token`` is not positive or ``bucket`` has no slot.
        """
        if token <= 0 or not 1 <= bucket <= self.bucket_count:
            raise ValueError(f"no token {token} for bucket {bucket} (1..{self.bucket_count})")
        with self._write:
            self._slots[bucket] = token

    def forget(self, bucket: int) -> None:
        """This node no longer serves ``bucket``: a run that starts from now on is not run."""
        if 1 <= bucket <= self.bucket_count:
            with self._write:
                self._slots[bucket] = 0

    def forget_all(self) -> None:
        """This node serves no bucket any more (a suspended or lost session, a stop)."""
        with self._write:
            for bucket in range(1, self.bucket_count + 1):
                self._slots[bucket] = 0


_node_tokens: TokenSource | None = None
"""This worker's tokens: a table created in its main process, inherited by its pool processes
(None outside a worker)."""


def share_node_tokens(bucket_count: int) -> TokenTable:
    """This worker's table, created in its main process before the pool starts (once: a
    second call returns the first table, which the pool may already share)."""
    global _node_tokens
    if not isinstance(_node_tokens, TokenTable):
        _node_tokens = TokenTable(bucket_count)
    return _node_tokens


def node_tokens() -> TokenSource | None:
    """This worker's tokens (None outside a worker: a test, ``allot work send``)."""
    return _node_tokens


def require_node_tokens() -> TokenSource:
    """The tokens of this worker process, which must have inherited its main process's table
    (a pool process, at its start). One that did not (a pool not forked from it, a table that
    could not be made) gets :class:`NoTokens`: it sends every table task back and commits
    none, rather than fall back to SQL's token. Never raises."""
    global _node_tokens
    if _node_tokens is None:
        _node_tokens = NoTokens()
        log.error(
            "this worker process did not inherit the node's lease tokens (a pool started with "
            "'spawn'?): it runs no table task; keep worker_pool_start_method 'fork'"
        )
    return _node_tokens
