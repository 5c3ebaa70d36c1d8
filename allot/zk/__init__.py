"""Everything allot keeps in ZooKeeper, built on kazoo.

One module per idea:

- :mod:`allot.zk.paths`: the layout (:class:`ZkPaths`);
- :mod:`allot.zk.codec`: the bytes (Amoro's formats), strict decoders;
- :mod:`allot.zk.client`: the only place that opens connections (:func:`connect`), ACLs;
- :mod:`allot.zk.store`: the assignment subtree (:class:`AssignmentStore`);
- :mod:`allot.zk.model`: the values read (:class:`AllAssignments`, :class:`AssignmentVersion`);
- :mod:`allot.zk.apply`, :mod:`allot.zk.steps`, :mod:`allot.zk.batch`: applying a plan in
  fenced transactions within ZooKeeper's request limit; :mod:`allot.zk.refresh`: refreshing
  ``last-update-time`` when nothing moves;
- :mod:`allot.zk.membership` / :mod:`allot.zk.members`: registering a live node, taking over
  a crashed predecessor's znode; reading and watching membership;
- :mod:`allot.zk.lock`: the assignment cycle's lock and its guard;
- :mod:`allot.zk.process`: is a pid of this host still running (takeover decisions);
- :mod:`allot.zk.testing`: fault injection for tests (session expiry).

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

from allot.zk.apply import DEFAULT_MAX_REQUEST_BYTES, ApplyResult, apply_plan
from allot.zk.client import connect, default_acl, ensure_layout, make_client
from allot.zk.codec import NodeInfo, now_ms
from allot.zk.lock import AssignmentLock, LockGuard
from allot.zk.members import LiveNode, Members, MembershipWatch, read_members
from allot.zk.membership import NodeRegistration, this_process
from allot.zk.model import AllAssignments, AssignmentVersion, NodeAssignment
from allot.zk.paths import ZkPaths
from allot.zk.refresh import touch
from allot.zk.store import AssignmentStore

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "AllAssignments",
    "ApplyResult",
    "AssignmentLock",
    "AssignmentStore",
    "AssignmentVersion",
    "LiveNode",
    "LockGuard",
    "Members",
    "MembershipWatch",
    "NodeAssignment",
    "NodeInfo",
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
