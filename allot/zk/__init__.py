"""Everything allot keeps in ZooKeeper, built on kazoo.

One module per idea:

- :mod:`allot.zk.paths`: the layout, every znode path (:class:`ZkPaths`); no I/O;
- :mod:`allot.zk.codec`: the bytes (Amoro's formats), strict decoders, :class:`MemberInfo`;
- :mod:`allot.zk.client`: the only place that opens connections (:func:`connect`), ACLs;
- :mod:`allot.zk.multiread`: reading many znodes in one round trip (``multiRead``);
- :mod:`allot.zk.version`: ``assignment-version``, the epoch and fence
  (:class:`AssignmentVersion`), and :func:`~allot.zk.version.read_version`, the one read every
  writer starts from;
- :mod:`allot.zk.snapshot`: a read of the assignment subtree (:class:`AllAssignments`), what a
  plan is computed on and an apply fenced by; no I/O;
- :mod:`allot.zk.batch`: a plan as fenced transactions within ZooKeeper's request limit (pure);
- :mod:`allot.zk.apply`: committing them (:func:`apply_plan`), and :func:`touch` when
  nothing moves;
- :mod:`allot.zk.store`: the assignment subtree's reads and writes (:class:`AssignmentStore`);
- :mod:`allot.zk.departures`: when each gone node was first seen gone (grace periods);
- :mod:`allot.zk.epoch`: the epoch floor, ``assignment-version`` re-published so an epoch never
  goes backwards;
- :mod:`allot.zk.last_cycle`: the last cycle's report, for ``allot status``;
- :mod:`allot.zk.leases`: the one reader of the bucket leases ``{root}/leases`` (their bytes are
  :func:`~allot.zk.codec.encode_lease`'s), for table work, ``allot status``/``verify`` and metrics;
- :mod:`allot.zk.load`: each node's measured seconds of table work per bucket
  (``{root}/load/{nodeKey}``), published and summed (:func:`~allot.zk.load.read_load`);
- :mod:`allot.zk.pins`: the pins ``{root}/pins`` (:func:`~allot.zk.pins.read_pins`, version-checked
  :func:`~allot.zk.pins.set_pin` and :func:`~allot.zk.pins.remove_pin`);
- :mod:`allot.zk.registration`: registering this node, taking over a crashed predecessor's
  znode (:class:`NodeRegistration`);
- :mod:`allot.zk.members`: reading and watching the member list (:func:`read_members`);
- :mod:`allot.zk.process`: is a pid of this host still running (takeover decisions);
- :mod:`allot.zk.lock`: the assignment cycle's lock and its guard (:class:`AssignmentLock`);
- :mod:`allot.zk.triggers`: the trigger duty, one cycle per membership change.

Fault injection for tests (session expiry) is :mod:`allot.testing.zookeeper`.

The write path's imports point one way, ``paths``/``codec`` -> ``version`` -> ``snapshot`` ->
``batch`` -> ``apply`` -> ``store`` (and ``departures``/``epoch``), and no module here imports one
that imports it back (``lint-imports`` checks it).

The assignment cycle, in short::

    client = connect(settings)
    paths = ZkPaths(settings.zk_root)
    store = AssignmentStore(client, paths)
    with AssignmentLock(client, paths, identifier=worker).holding() as guard:
        if guard is None:
            return "skipped"                        # another cycle holds the lock
        members = read_members(client, paths)       # live nodes
        snapshot = store.read_all()                 # assignments + version, version first
        plan = ...                                  # planner, pure
        guard.check()
        result = store.apply(snapshot, plan["assignments"], plan_id=plan_id,
                             remove=offline_nodes, guard=guard)
"""

from __future__ import annotations

from allot.zk.apply import DEFAULT_MAX_REQUEST_BYTES, ApplyResult, apply_plan, touch
from allot.zk.client import connect, default_acl, ensure_layout, make_client
from allot.zk.codec import MemberInfo, now_ms
from allot.zk.lock import AssignmentLock, LockGuard
from allot.zk.members import LiveNode, Members, MembershipWatch, read_members
from allot.zk.paths import ZkPaths
from allot.zk.registration import NodeRegistration, this_process
from allot.zk.snapshot import AllAssignments, NodeAssignment
from allot.zk.store import AssignmentStore
from allot.zk.version import AssignmentVersion

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "AllAssignments",
    "ApplyResult",
    "AssignmentLock",
    "AssignmentStore",
    "AssignmentVersion",
    "LiveNode",
    "LockGuard",
    "MemberInfo",
    "Members",
    "MembershipWatch",
    "NodeAssignment",
    "NodeRegistration",
    "ZkPaths",
    "apply_plan",
    "connect",
    "default_acl",
    "ensure_layout",
    "make_client",
    "now_ms",
    "read_members",
    "this_process",
    "touch",
]
