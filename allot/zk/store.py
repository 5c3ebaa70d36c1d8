"""The assignment store: Amoro's ``bucket-assignments`` subtree plus ``assignment-version``.

Reads tolerate anything a human or another program may have left in the tree: a node whose
``assignments`` is not a JSON list of decimal strings, or whose ``last-update-time`` is not an
integer, is reported in :attr:`AllAssignments.corrupt` (and logged) while every other node
reads fine; a child whose name is not a valid node key is reported in
:attr:`AllAssignments.invalid`. A corrupt node is treated as holding nothing, and the next
applied plan that names it overwrites it.

Writes: the assignment cycle uses :meth:`AssignmentStore.apply` (a fenced multi-op
transaction) and :meth:`AssignmentStore.touch` (fenced time refresh), both thin fronts for
:mod:`allot.zk.apply`, which never imports this module back. :meth:`AssignmentStore.save` and
:meth:`AssignmentStore.delete` are single-node writes for tools and tests; they are atomic per
node and bump the znode version of ``assignment-version`` (not its epoch), so a cycle that read
the tree before them fails its apply with :class:`~allot.errors.StaleAssignment` instead of
overwriting them blindly.

The fence covers writers that go through allot. A program that writes the subtree without
touching ``assignment-version`` (Amoro's own assigner, a hand edit) is not fenced: an apply
based on an older read then overwrites the nodes its plan changes. Run one assigner per root.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError, NoNodeError

from allot.errors import AccessDenied, CorruptAssignment, StaleAssignment
from allot.names import split_node_keys
from allot.zk.apply import DEFAULT_MAX_REQUEST_BYTES, ApplyResult, apply_plan, touch
from allot.zk.client import ensure_layout
from allot.zk.codec import (
    MsClock,
    VersionRecord,
    encode_buckets,
    encode_time,
    encode_version,
    now_ms,
)
from allot.zk.lock import LockGuard
from allot.zk.multiread import get_many
from allot.zk.paths import ASSIGNMENTS, LAST_UPDATE_TIME, ZkPaths
from allot.zk.snapshot import AllAssignments, NodeAssignment, decode_node
from allot.zk.version import AssignmentVersion, get_result, read_version, version_from

log = logging.getLogger(__name__)


class AssignmentStore:
    """Reads and writes the assignment subtree of one root through a started client.

    Failure modes:
        SUSPENDED (connection lost, session alive): reads are retried through
        ``client.retry`` until the connection returns or the retry gives up
        (``kazoo.exceptions.ConnectionLoss`` / ``RetryFailedError`` escape then); writes are
        not retried blindly: an apply whose commit is cut raises
        :class:`~allot.errors.ApplyOutcomeUnknown`.
        LOST (session expired): the store holds no ephemeral state, so nothing is lost; kazoo
        opens a new session and the next call works. Fencing is the job of the apply and the
        lock, not of the store.
        Stale ephemeral nodes: none here; every znode of the subtree is persistent.
        Malformed data: reported per node (:attr:`AllAssignments.corrupt`), never raised by
        :meth:`read_all`; :meth:`read` raises :class:`~allot.errors.CorruptAssignment`.
    """

    def __init__(self, client: KazooClient, paths: ZkPaths, clock: MsClock = now_ms) -> None:
        self.client = client
        self.paths = paths
        self.clock = clock

    # -- reads ---------------------------------------------------------------------------------

    def read_version(self) -> AssignmentVersion:
        """The current ``assignment-version`` (epoch 0 and ``zversion`` -1 when absent): see
        :func:`allot.zk.version.read_version`."""
        return read_version(self.client, self.paths)

    def read_all(self) -> AllAssignments:
        """Every node's assignment, with ``assignment-version`` read *first*.

        The version is requested before the children (ZooKeeper answers one session's
        requests in order), so the data read is at least as new as the version: an apply
        fenced on this version can never be based on data older than the version it checks.
        The 2 reads per node go in ``multiRead`` requests of up to 1,000 reads each
        (:mod:`allot.zk.multiread`; pipelined ``get_async`` on servers before 3.6), not one
        round trip per znode.

        Raises:
            AccessDenied: ZooKeeper refused a read.
        """
        return self.client.retry(self._read_all)  # type: ignore[no-any-return]

    def _read_all(self) -> AllAssignments:
        version_result = self.client.get_async(self.paths.assignment_version)
        try:
            children, parent = self.client.get_children(
                self.paths.bucket_assignments, include_data=True
            )
            newest = parent.pzxid
        except NoNodeError:
            children, newest = [], 0
        keys, invalid = split_node_keys(children)
        for child, reason in invalid.items():
            log.warning("ignoring %s/%s: %s", self.paths.bucket_assignments, child, reason)
        reads = [
            path
            for key in keys
            for path in (self.paths.assignments(key), self.paths.last_update_time(key))
        ]
        try:
            found = get_many(self.client, reads)
        except NoAuthError:
            raise AccessDenied(
                "ZooKeeper refused to read the assignment: check ALLOT_ZK_AUTH"
            ) from None
        found_version = get_result(version_result)
        version = (
            AssignmentVersion()
            if found_version is None
            else version_from(found_version[0], found_version[1].version, found_version[1].mzxid)
        )
        nodes: dict[str, NodeAssignment] = {}
        corrupt: dict[str, str] = {}
        present: dict[str, frozenset[str]] = {}
        for index, key in enumerate(keys):
            assignments, updated = found[2 * index], found[2 * index + 1]
            if assignments is None and updated is None and not self._entry_exists(key):
                continue  # deleted between the listing and the read (an apply or a leave)
            if assignments is not None:
                newest = max(newest, assignments[1].mzxid)
            present[key] = frozenset(
                name
                for name, value in ((ASSIGNMENTS, assignments), (LAST_UPDATE_TIME, updated))
                if value is not None
            )
            try:
                nodes[key] = decode_node(key, assignments, updated)
            except ValueError as exc:
                log.error("assignment of node %s is corrupt: %s", key, exc)
                corrupt[key] = str(exc)
        return AllAssignments(nodes, version, corrupt, invalid, present, newest)

    def read(self, node_key: str) -> NodeAssignment | None:
        """One node's assignment, or None when it has no entry.

        Raises:
            InvalidNodeKey: ``node_key`` is not a valid key.
            CorruptAssignment: the entry exists but its data cannot be decoded.
        """
        assignments_path = self.paths.assignments(node_key)
        time_path = self.paths.last_update_time(node_key)

        def read_both() -> tuple[tuple[bytes, Any] | None, tuple[bytes, Any] | None]:
            first = self.client.get_async(assignments_path)
            second = self.client.get_async(time_path)
            return get_result(first), get_result(second)

        assignments, updated = self.client.retry(read_both)
        entry = self.paths.node_entry(node_key)
        missing = assignments is None and updated is None
        if missing and self.client.retry(self.client.exists, entry) is None:
            return None
        try:
            return decode_node(node_key, assignments, updated)
        except ValueError as exc:
            raise CorruptAssignment(f"assignment of node {node_key} is corrupt: {exc}") from None

    # -- writes --------------------------------------------------------------------------------

    def save(self, node_key: str, buckets: Iterable[int]) -> None:
        """Write one node's assignment and last-update-time (create or overwrite), atomically.

        Unfenced against plans: for tools, tests and migrations; the cycle uses :meth:`apply`.
        It raises the znode version of ``assignment-version`` (creating the znode at epoch 0
        when absent) so an in-flight apply that read the tree earlier fails instead of
        overwriting this write. Safe to repeat.

        Raises:
            InvalidNodeKey: ``node_key`` is not a valid key.
            StaleAssignment: the entry changed between this call's read and its write twice in
                a row (a concurrent writer); nothing was written by the failing attempt.
        """
        data = encode_buckets(buckets)
        entry = self.paths.node_entry(node_key)
        ensure_layout(self.client, self.paths)

        def attempt() -> list[Any]:
            transaction = self.client.transaction()
            present = self._children(entry)
            if present is None:
                transaction.create(entry, b"")
                present = set()
            for name, value in ((ASSIGNMENTS, data), (LAST_UPDATE_TIME, encode_time(self.clock()))):
                path = f"{entry}/{name}"
                if name in present:
                    transaction.set_data(path, value)
                else:
                    transaction.create(path, value)
            self._bump_version(transaction)
            return transaction.commit()  # type: ignore[no-any-return]

        self._commit_twice(attempt, f"save of node {node_key}")

    def delete(self, node_key: str) -> bool:
        """Delete a node's entry with every child, atomically. Returns False when it had none.

        Like :meth:`save`, it raises the znode version of ``assignment-version``. Safe to
        repeat.

        Raises:
            InvalidNodeKey: ``node_key`` is not a valid key.
            StaleAssignment: the entry kept changing under this call.
        """
        entry = self.paths.node_entry(node_key)
        existed = True

        def attempt() -> list[Any]:
            nonlocal existed
            children = self._children(entry)
            if children is None:
                existed = False
                return []
            transaction = self.client.transaction()
            for child in sorted(children):
                transaction.delete(f"{entry}/{child}")
            transaction.delete(entry)
            self._bump_version(transaction)
            return transaction.commit()  # type: ignore[no-any-return]

        self._commit_twice(attempt, f"delete of node {node_key}")
        return existed

    def touch(
        self,
        snapshot: AllAssignments,
        node_keys: Collection[str],
        *,
        guard: LockGuard | None = None,
    ) -> int:
        """Refresh ``last-update-time`` of ``node_keys`` (those with an entry in ``snapshot``)
        when a cycle moves nothing. Fenced: see :func:`allot.zk.apply.touch`.

        Returns:
            The number of nodes refreshed.
        """
        return touch(self.client, self.paths, snapshot, node_keys, guard=guard, clock=self.clock)

    def apply(
        self,
        snapshot: AllAssignments,
        assignments: Mapping[str, Iterable[int]],
        *,
        plan_id: str,
        remove: Collection[str] = (),
        guard: LockGuard | None = None,
        max_request_bytes: int | None = None,
    ) -> ApplyResult:
        """Apply a plan read against ``snapshot``: see :func:`allot.zk.apply.apply_plan`."""
        return apply_plan(
            self.client,
            self.paths,
            snapshot,
            assignments,
            plan_id=plan_id,
            remove=remove,
            guard=guard,
            clock=self.clock,
            max_request_bytes=max_request_bytes or DEFAULT_MAX_REQUEST_BYTES,
        )

    # -- helpers -------------------------------------------------------------------------------

    def _entry_exists(self, node_key: str) -> bool:
        return self.client.exists(self.paths.node_entry(node_key)) is not None

    def _children(self, path: str) -> set[str] | None:
        try:
            return set(self.client.get_children(path))
        except NoNodeError:
            return None

    def _bump_version(self, transaction: Any) -> None:
        """Add a write that raises the version znode's data version and keeps its content."""
        path = self.paths.assignment_version
        found = get_result(self.client.get_async(path))
        if found is None:
            transaction.create(path, encode_version(VersionRecord(0, None, None)))
        else:
            transaction.set_data(path, found[0], version=found[1].version)

    def _commit_twice(self, attempt: Any, what: str) -> None:
        for _ in range(2):
            try:
                results = self.client.retry(attempt)
            except NoAuthError:
                raise AccessDenied(f"ZooKeeper refused the {what}: check ALLOT_ZK_AUTH") from None
            failures = [r for r in results if isinstance(r, Exception)]
            if not failures:
                return
            if any(isinstance(r, NoAuthError) for r in failures):
                raise AccessDenied(f"ZooKeeper refused the {what}: check ALLOT_ZK_AUTH")
        raise StaleAssignment(f"the {what} raced with another writer twice; nothing was written")
