"""The tokens of this node's leases, shared by a worker's main process and its pool processes.

A process runs and commits a bucket's work under the (generation, token) of the lease *its own
node* holds, never under a pair read back from SQL: a frozen process that shares its
successor's node key would read the successor's pair there and pass its fence
(``docs/table-work.md``, case 12).
The leases live in the worker's main process (:class:`~allot.work.leases.BucketWork`); the
runs, in its prefork pool processes (:func:`allot.work.run.execute`). :class:`TokenTable` is
what joins them: one slot per bucket, holding the ZooKeeper generation and the token of a
bucket this node serves (its fence's pair), token 0 for any other.

The table is one anonymous shared mapping (``mmap`` of ``-1``: ``MAP_SHARED |
MAP_ANONYMOUS``), created by :func:`share_node_tokens` in the main process before the pool
starts (Celery's ``worker_init``, ``tasks/node.py``). Celery's prefork pool (billiard, start
method ``fork``) forks its processes from the main process, at start and again whenever one
dies or is recycled: each inherits the mapping and sees every later write of the main process.
A pool process that finds no table (a pool started with ``spawn``, a table that could not be
made) gets :class:`NoTokens` (:func:`require_node_tokens`): it runs no table work rather than
trust SQL's token.

A bucket's slot holds the *pair* ``(generation, token)`` of this node's lease, the pair its
fence names (:mod:`allot.work.fence`, :mod:`allot.generation`): a run commits under both,
so a reader must never take the generation of one lease with the token of another.

Safe across processes without a lock, by a sequence lock (a *seqlock*) per slot:

- one writer: only the main process writes (the lease loop and kazoo's state listener; a
  ``threading.Lock`` orders the two); pool processes only read;
- one word per value: slot ``b`` is three 8-byte words at offset ``24 * b`` of a page-aligned
  mapping, ``seq``, ``generation`` and ``token``, each read and written whole through a
  ``memoryview`` of format ``q`` (CPython copies it with one fixed-size 8-byte ``memcpy``,
  compiled to one load or store on 64-bit targets), and an aligned 8-byte load or store is
  single-copy atomic on x86-64 and AArch64: a reader sees a word's old value or its new one,
  never a mix. The table refuses to exist on a 32-bit Python;
- the writer changes a slot as: ``seq += 1`` (odd: a change is under way), ``generation``,
  ``token``, ``seq += 1`` (even again). It writes nothing when the slot already holds the pair
  (the lease loop repeats :meth:`TokenTable.hold` every pass), so a slot changes only when a
  lease or its fence does;
- the reader reads ``seq``, ``generation``, ``token``, ``seq`` again, and accepts the pair
  only if both ``seq`` reads are equal and even; otherwise it reads again, a few times
  (:data:`READ_TRIES`), then answers "not served here" (the message goes back to its queue:
  always safe, at worst a redelivery). An accepted pair with token 0 is "not served here".

Why an accepted pair is one the writer held (not torn): the sequence only grows (64 bits,
never wraps), and every change of the slot's values happens while it is odd. If both reads of
``seq`` return the same even value ``2k``, no change began between them (it would have made it
``2k + 1`` first, and a later one larger still), so both values were read while the slot held
the pair written by the ``k``-th change. Checking the token twice instead of a sequence (token
0, generation, new token; accept equal non-zero token reads) is weaker: it misses changes
that end on the token they started from (``(g1, t) -> (g2, u) -> (g3, t)`` while one reader
reads), and the reader pairs ``t`` with ``g2``, a pair no lease had. Tokens of one bucket
repeat only across ZooKeepers, but a ZooKeeper rebuilt from scratch is exactly when they may:
the sequence makes the argument not depend on token values at all.

Memory ordering, the assumption: the argument needs the reader to see the writer's stores in
the order they were made, and to make its own loads in program order. x86-64 (TSO) gives both
for plain loads and stores (stores are not reordered with stores, loads not with loads), and
CPython makes each access in a separate call, so the compiler cannot reorder them either:
the protocol holds there as written. On a weaker model (AArch64, POWER) the hardware may
reorder both, and Python offers no barrier: a reader could accept a torn pair. What still
holds there: every word is atomic, so a torn pair joins a generation and a token this node's
main process wrote for the bucket (values of its own leases, never a successor's), and the
run's commit is still checked by the fence, which must name this node's key with exactly that
pair (:func:`allot.work.fence.hold_fence`); a torn pair that no fence names is sent back or
refused. What is lost there is the same-key zombie argument's premise (case 12): a torn pair
is still made of the zombie's own values, but the argument no longer shows it is a pair the
zombie held, so it could (only if its values happen to combine into it) equal the
successor's fence. Run workers on x86-64 for the guarantee as argued.

Nothing else is ordered with a slot, and nothing needs to be: a reader that sees a change an
instant late acts as a task that had started an instant earlier, and its commit is still
checked by the fence (``docs/table-work.md``, F).
"""

from __future__ import annotations

import logging
import mmap
import sys
import threading
import time
from typing import NamedTuple, Protocol

log = logging.getLogger(__name__)

WORD_BYTES = 8
SLOT_WORDS = 3
"""A slot's words: the sequence, the generation, the token."""
READ_TRIES = 8
"""How often a reader reads a slot that is being changed before it answers "not here"."""
RETRY_SECONDS = 0.001


class OwnLease(NamedTuple):
    """The fence of this node's lease of a bucket: its ZooKeeper generation and its token."""

    generation: int
    token: int


class TokenSource(Protocol):
    """Where a run finds the (generation, token) of its node's lease of a bucket."""

    def lease(self, bucket: int) -> OwnLease | None:
        """The pair under which this node serves ``bucket``, or None when it does not."""
        ...


class NoTokens:
    """The tokens of a pool process that inherited none: it serves no bucket."""

    def lease(self, bucket: int) -> OwnLease | None:
        """Always None: no run of any bucket starts here."""
        return None

    def token(self, bucket: int) -> int:
        """Always 0."""
        return 0


class TokenTable:
    """Bucket -> the (generation, token) of this node's lease of it (None: this node does not
    serve it), in memory shared with the processes forked after it was created (see the
    module docstring for the protocol and why it needs no lock).

    Written by the process that holds the leases (:meth:`hold`, :meth:`forget`,
    :meth:`forget_all`), read by any (:meth:`lease`, :meth:`token`). Buckets outside
    ``1..bucket_count`` have no slot: they are never served.
    """

    def __init__(self, bucket_count: int) -> None:
        if sys.maxsize < 2**63 - 1:
            raise RuntimeError("the shared token table needs a 64-bit Python (atomic 8-byte slots)")
        if bucket_count < 1:
            raise ValueError(f"bucket count must be positive, not {bucket_count}")
        self.bucket_count = bucket_count
        size = WORD_BYTES * SLOT_WORDS * (bucket_count + 1)
        self._memory = mmap.mmap(-1, size)  # zero-filled, shared, page-aligned
        self._words = memoryview(self._memory).cast("q")
        self._write = threading.Lock()

    def lease(self, bucket: int) -> OwnLease | None:
        """The pair under which this node serves ``bucket``, or None when it does not (or
        when the slot kept changing while it was read: treated as not served here)."""
        if not 1 <= bucket <= self.bucket_count:
            return None
        words, at = self._words, SLOT_WORDS * bucket
        for attempt in range(READ_TRIES):
            if attempt:
                time.sleep(RETRY_SECONDS)  # let the writer finish its change
            seq = words[at]
            generation = words[at + 1]
            token = words[at + 2]
            if seq % 2 == 0 and words[at] == seq:
                return None if token == 0 else OwnLease(int(generation), int(token))
        log.warning("bucket %d: its shared token kept changing while read: not serving", bucket)
        return None

    def token(self, bucket: int) -> int:
        """The token under which this node serves ``bucket``, or 0 when it does not."""
        own = self.lease(bucket)
        return 0 if own is None else own.token

    def held(self) -> dict[int, OwnLease]:
        """Bucket -> (generation, token), for every bucket this node serves."""
        return {b: own for b in range(1, self.bucket_count + 1) if (own := self.lease(b))}

    def hold(self, bucket: int, token: int, *, generation: int) -> None:
        """Serve ``bucket`` under ``token`` (a lease's ``czxid``, > 0) of ZooKeeper
        ``generation`` (>= 0, the one its fence was written with) from now on.

        Raises:
            ValueError: ``token`` is not positive, ``generation`` negative or ``bucket`` has
                no slot.
        """
        if token <= 0 or generation < 0 or not 1 <= bucket <= self.bucket_count:
            raise ValueError(
                f"no token {token} of generation {generation} for bucket {bucket} "
                f"(1..{self.bucket_count})"
            )
        with self._write:
            self._set(bucket, generation, token)

    def forget(self, bucket: int) -> None:
        """This node no longer serves ``bucket``: a run that starts from now on is not run."""
        if 1 <= bucket <= self.bucket_count:
            with self._write:
                self._set(bucket, 0, 0)

    def forget_all(self) -> None:
        """This node serves no bucket any more (a suspended or lost session, a stop)."""
        with self._write:
            for bucket in range(1, self.bucket_count + 1):
                self._set(bucket, 0, 0)

    def _set(self, bucket: int, generation: int, token: int) -> None:
        """The writer's side of the protocol (under ``_write``): nothing when unchanged."""
        words, at = self._words, SLOT_WORDS * bucket
        if words[at + 1] == generation and words[at + 2] == token:
            return  # only this process writes: what it reads back is what it wrote
        seq = words[at]
        words[at] = seq + 1  # odd: readers retry
        words[at + 1] = generation
        words[at + 2] = token
        words[at] = seq + 2  # even: the new pair is whole


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
