"""The ZooKeeper generation: which ZooKeeper a fencing token comes from.

Both SQL fences fence with ZooKeeper ``czxid``s: a bucket lease's (table work,
:mod:`allot.work.fence`) and the assignment lock's (the cycle's mirror,
:mod:`allot.cycle.fence`). A ``czxid`` only grows within one ZooKeeper's life. A ZooKeeper
rebuilt from scratch (its data lost, a new ensemble) counts again from zero, so its tokens are
smaller than the fences SQL already holds. The generation tells the ZooKeepers apart, so both
fences compare ``(generation, token)`` pairs:

- ``{root}/generation`` (persistent, decimal ASCII) holds this ZooKeeper's generation. It is
  created once, by the first node or cycle that needs it and finds none (:func:`zk_generation`).
- The number comes from SQL, which outlives a ZooKeeper: :func:`allocate_generation` raises
  the ``fence_generation`` row by one, never below the largest generation a fence names
  (``bucket_lease``, ``mirror_state``), and the allocation commits before the znode is
  created. So a rebuilt ZooKeeper always gets a larger generation than every earlier one: its
  holders take the fences over, and a holder still running on the old ZooKeeper is refused.
- Two nodes that both find no znode both allocate; one create wins and both use the winner's
  number (the loser's allocation is burned, never used).
- A holder reads the generation after it took its lease or lock
  (:class:`~allot.work.leases.BucketWork` fences with the generation read in the same pass,
  after the takes; the cycle reads it under the assignment lock). Within one ZooKeeper the
  znode's number only grows (it changes only when someone deletes it by hand: then a larger
  one is allocated), so a later holder never has a smaller pair.

Error handling: a ZooKeeper error (suspension, session loss) or an SQL error raises to the
caller, which fences nothing in that pass; a retried create that had landed finds its own
znode (``NodeExistsError``) and reads it. An unreadable znode raises ``ValueError``: nothing
is fenced until it is fixed (deleting it is safe: a larger generation is allocated). The
argument is in ``docs/table-work.md`` (case 16).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError
from sqlalchemy import case, func, insert, select, union_all, update
from sqlalchemy.orm import Session

from allot.zk.paths import ZkPaths
from models.base import utcnow
from models.schema import BucketLease, FenceGeneration, MirrorState

log = logging.getLogger(__name__)

ROW = "zookeeper"
"""The ``fence_generation`` row generations are allocated from."""


def encode_generation(generation: int) -> bytes:
    """The ``{root}/generation`` znode's data: decimal ASCII."""
    return str(generation).encode("ascii")


def decode_generation(data: bytes) -> int:
    """The generation in ``{root}/generation``'s data.

    Raises:
        ValueError: not a positive decimal number.
    """
    text = data.decode("ascii", errors="replace")
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} is not a ZooKeeper generation (a positive decimal number)")
    return int(text)


def allocate_generation(session: Session) -> int:
    """Hand out a new generation: one more than every generation handed out so far and every
    generation a fence names (``bucket_lease``, ``mirror_state``). The ``UPDATE`` locks the
    row, so two allocations never return the same number. The caller commits (before anyone
    may use the number).
    """
    named = union_all(
        select(BucketLease.generation.label("generation")),
        select(MirrorState.generation.label("generation")),
    ).subquery()
    floor = select(func.coalesce(func.max(named.c.generation), 0)).scalar_subquery()
    raised = session.execute(
        update(FenceGeneration)
        .where(FenceGeneration.name == ROW)
        .values(
            generation=case(
                (FenceGeneration.generation < floor, floor), else_=FenceGeneration.generation
            )
            + 1,
            allocated_at=utcnow(),
        )
        .returning(FenceGeneration.generation)
    ).scalar_one_or_none()
    if raised is not None:
        return int(raised)
    # a database created by hand (the migration inserts the row); a racing insert fails
    # with an IntegrityError and the caller tries again
    first = int(session.execute(select(floor)).scalar_one()) + 1
    session.execute(
        insert(FenceGeneration).values(name=ROW, generation=first, allocated_at=utcnow())
    )
    return first


def zk_generation(client: KazooClient, paths: ZkPaths, allocate: Callable[[], int]) -> int:
    """This ZooKeeper's generation, from ``{root}/generation``; when there is none, a new one:
    ``allocate()`` (which commits :func:`allocate_generation` and returns it), then the znode
    is created; if another node created it first, its number is used.

    Raises:
        KazooException: ZooKeeper could not be read or written.
        ValueError: the znode holds no generation.
        Exception: what ``allocate`` raised (SQL down).
    """
    try:
        data, _ = client.get(paths.generation)
    except NoNodeError:
        allocated = allocate()
        try:
            client.create(paths.generation, encode_generation(allocated), makepath=True)
        except NodeExistsError:
            data, _ = client.get(paths.generation)  # another node's create won: use it
        else:
            log.warning(
                "ZooKeeper had no generation (new, or rebuilt from scratch): it is generation "
                "%d from now on",
                allocated,
            )
            return allocated
    return decode_generation(data)
