"""Reading the bucket leases: every child of ``{root}/leases`` in one listing and one
``multiRead`` (:func:`read_leases`), for the operator's views and the cluster's gauges.

A lease ``{root}/leases/{bucket}`` is an ephemeral znode whose data is a
:class:`~allot.zk.codec.LeaseRecord` (``{"node_key","epoch"}``) and whose ``czxid`` is its
holder's token. :class:`allot.work.leases.BucketWork` writes them (and reads only the leases
of its own buckets, one by one: never this listing, whose cost grows with the cluster);
``allot verify`` judges the node each one names
(:mod:`allot.inspect.invariants`); ``allot status`` and the ``allot_buckets_without_lease``
gauge count the buckets that have one.

What a reader may find: a child whose name is not a bucket id (its canonical decimal form: no
sign, no leading zero) is listed in :attr:`LeaseListing.foreign` and is nobody's lease; a
child with unreadable data is still a znode in the bucket's place (:attr:`Lease.record` is
None, ``problem`` says why); a persistent znode there (``session`` 0) is a stray no session
owns, which its bucket's taker deletes. Nothing here raises for what the znodes hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from allot.zk.codec import LeaseRecord, decode_lease
from allot.zk.multiread import get_many
from allot.zk.paths import ZkPaths


def lease_bucket(name: str) -> int | None:
    """The bucket id a child of ``{root}/leases`` is named by, or None when ``name`` is not
    a bucket id as :meth:`ZkPaths.lease` writes it (``"7"``; not ``"07"``, ``"+7"``, ``"lock"``)."""
    if not (name.isascii() and name.isdigit()) or name != str(int(name)):
        return None
    return int(name)


@dataclass(frozen=True)
class Lease:
    """One znode ``{root}/leases/{bucket}`` as read.

    ``token`` is its ``czxid`` (the holder's token), ``session`` its ``ephemeralOwner`` (0: a
    persistent znode, not a lease), ``version`` its data version (for a conditional delete);
    ``record`` is its decoded data, or None when ``problem`` says why it is unreadable, and
    ``data`` the bytes as read.
    """

    bucket: int
    token: int
    session: int
    version: int
    data: bytes
    record: LeaseRecord | None
    problem: str | None = None

    @classmethod
    def decode(
        cls, bucket: int, data: bytes | None, *, token: int = 0, session: int = 0, version: int = 0
    ) -> Lease:
        """The lease of ``bucket`` whose znode holds ``data`` (decoded; never raises)."""
        try:
            record, problem = decode_lease(data), None
        except ValueError as exc:
            record, problem = None, str(exc)
        return cls(bucket, token, session, version, data or b"", record, problem)

    @property
    def node_key(self) -> str | None:
        """The node this lease names, or None when its data is unreadable."""
        return None if self.record is None else self.record.node_key


@dataclass(frozen=True)
class LeaseListing:
    """Every child of ``{root}/leases``: ``leases`` by bucket id, and the ``foreign`` names
    that are no bucket id (sorted)."""

    leases: dict[int, Lease]
    foreign: tuple[str, ...] = ()

    @property
    def buckets(self) -> frozenset[int]:
        """The buckets with a znode in their lease's place (readable or not)."""
        return frozenset(self.leases)

    def of_session(self, session: int) -> dict[int, Lease]:
        """The leases ephemeral to ``session`` (a kazoo ``client_id[0]``), by bucket."""
        return {bucket: lease for bucket, lease in self.leases.items() if lease.session == session}


def read_leases(client: KazooClient, paths: ZkPaths) -> LeaseListing | None:
    """List ``{root}/leases`` and read every lease's data and stat in one ``multiRead``
    (:func:`allot.zk.multiread.get_many`); None when ``{root}/leases`` does not exist (no node
    ever took a lease). A lease deleted between the listing and the read is left out.

    Makes no retry of its own: wrap it in ``client.retry`` where a suspension should be waited
    out.

    Raises:
        kazoo.exceptions.KazooException: ZooKeeper could not be read.
    """
    try:
        names = sorted(client.get_children(paths.leases))
    except NoNodeError:
        return None
    foreign = tuple(name for name in names if lease_bucket(name) is None)
    buckets = sorted(bucket for bucket in map(lease_bucket, names) if bucket is not None)
    found = get_many(client, [paths.lease(bucket) for bucket in buckets])
    leases: dict[int, Lease] = {}
    for bucket, hit in zip(buckets, found, strict=True):
        if hit is not None:
            data, stat = hit
            leases[bucket] = Lease.decode(
                bucket, data, token=stat.czxid, session=stat.ephemeralOwner, version=stat.version
            )
    return LeaseListing(leases, foreign)
