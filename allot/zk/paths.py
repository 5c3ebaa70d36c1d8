"""Where allot keeps things in ZooKeeper: one object that names every path.

The layout under the root (``ALLOT_ZK_ROOT``, default ``/{cluster}/allot``)::

    {root}/bucket-assignments/{nodeKey}/assignments       persistent, JSON ["1","4","7"]
    {root}/bucket-assignments/{nodeKey}/last-update-time  persistent, epoch ms, decimal ASCII
    {root}/nodes/{nodeKey}                                ephemeral, JSON node info
    {root}/locks/assign                                   kazoo Lock of the assignment cycle
    {root}/assignment-version                             JSON {"epoch","plan_id","applied_at"}
    {root}/leases/{bucketId}                              ephemeral, JSON {"node_key","epoch"}
    {root}/generation                                     persistent, decimal ASCII
    {root}/load/{nodeKey}                                 ephemeral, JSON {"window","at","buckets"}
    {root}/pins                                           persistent, JSON {"<bucket>": "<node>"}

The ``bucket-assignments`` subtree is exactly Amoro's, so a root of ``/default/amoro/ams`` reads
and writes an Amoro cluster's assignments. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from allot.names import validate_node_key

ASSIGNMENTS = "assignments"
LAST_UPDATE_TIME = "last-update-time"


@dataclass(frozen=True)
class ZkPaths:
    """The znode paths of one allot root.

    ``root`` is an absolute ZooKeeper path other than ``/``, without a trailing slash
    (``Settings.zk_root`` guarantees that; anything else raises ``ValueError``). Methods
    taking a node key validate it and raise :class:`~allot.errors.InvalidNodeKey` for
    anything that is not a valid key, so a key can never escape its parent (no ``/``, no
    ``..``).
    """

    root: str

    def __post_init__(self) -> None:
        if not self.root.startswith("/") or self.root.endswith("/") or "//" in self.root:
            raise ValueError(
                f"ZooKeeper root must be absolute, without a trailing slash: {self.root!r}"
            )

    def _under(self, *parts: str) -> str:
        return self.root + "/" + "/".join(parts)

    @property
    def bucket_assignments(self) -> str:
        """Parent of every node's assignment entry (Amoro's ``bucket-assignments``)."""
        return self._under("bucket-assignments")

    def node_entry(self, node_key: str) -> str:
        """A node's assignment entry: the parent of its ``assignments`` and time znodes."""
        return self._under("bucket-assignments", validate_node_key(node_key))

    def assignments(self, node_key: str) -> str:
        """The znode holding a node's bucket ids, as a compact JSON list of strings."""
        return self._under("bucket-assignments", validate_node_key(node_key), ASSIGNMENTS)

    def last_update_time(self, node_key: str) -> str:
        """The znode holding the epoch milliseconds of a node's last assignment write."""
        return self._under("bucket-assignments", validate_node_key(node_key), LAST_UPDATE_TIME)

    @property
    def nodes(self) -> str:
        """Parent of the ephemeral membership znodes."""
        return self._under("nodes")

    def node(self, node_key: str) -> str:
        """A node's ephemeral membership znode."""
        return self._under("nodes", validate_node_key(node_key))

    @property
    def locks(self) -> str:
        """Parent of allot's locks."""
        return self._under("locks")

    @property
    def assign_lock(self) -> str:
        """The kazoo ``Lock`` path of the assignment cycle."""
        return self._under("locks", "assign")

    @property
    def trigger_lock(self) -> str:
        """The kazoo ``Lock`` path of the trigger duty (the one worker watching membership)."""
        return self._under("locks", "trigger")

    @property
    def leases(self) -> str:
        """The parent of the bucket leases: one ephemeral child per bucket whose table work a
        node runs (:mod:`allot.work.leases`)."""
        return self._under("leases")

    def lease(self, bucket_id: int) -> str:
        """The lease of bucket ``bucket_id``: ephemeral, JSON ``{"node_key","epoch"}``."""
        return self._under("leases", str(bucket_id))

    @property
    def generation(self) -> str:
        """The znode holding this ZooKeeper's generation, which SQL handed out when a node
        first found none (:mod:`allot.generation`): decimal ASCII, created once."""
        return self._under("generation")

    @property
    def assignment_version(self) -> str:
        """The znode holding the epoch and plan id of the last applied plan."""
        return self._under("assignment-version")

    @property
    def last_cycle(self) -> str:
        """The znode holding the JSON summary of the last cycle (read by ``allot status``)."""
        return self._under("last-cycle")

    @property
    def load(self) -> str:
        """Parent of the nodes' load znodes (:mod:`allot.zk.load`)."""
        return self._under("load")

    def load_of(self, node_key: str) -> str:
        """A node's load: ephemeral, JSON ``{"window","at","buckets"}`` (seconds per bucket)."""
        return self._under("load", validate_node_key(node_key))

    @property
    def pins(self) -> str:
        """The pins: persistent, JSON ``{"<bucket>": "<node key>"}`` (:mod:`allot.zk.pins`)."""
        return self._under("pins")

    @property
    def membership_trigger(self) -> str:
        """The znode holding the last membership version a worker triggered a cycle for."""
        return self._under("triggers", "membership")

    @property
    def containers(self) -> tuple[str, ...]:
        """The persistent parents allot creates under the root, root first."""
        return (self.root, self.bucket_assignments, self.nodes, self.locks)
