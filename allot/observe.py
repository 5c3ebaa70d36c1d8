"""One read of the cluster, classified: what the assignment cycle plans from (step 3 of
DESIGN.md's cycle) and what ``allot status`` shows.

:func:`observe` reads the stored assignment and the membership from ZooKeeper and, from SQL's
``node`` rows, when each departed node was first seen gone and which nodes were last recorded
present; it classifies the nodes live / suspect / offline (:mod:`allot.classify`). Pure reads:
it writes nothing, and it takes the client and the session factory from its caller (it opens
no connection).

Failure modes:
    SUSPENDED: the ZooKeeper reads retry through ``client.retry`` until the connection returns
    or the retry gives up (``RetryFailedError``, a ``KazooException``, propagates).
    LOST (session expired): reads hold no ephemeral state; kazoo's new session answers them.
    Corrupt data in ZooKeeper: never raised; an unreadable assignment entry is reported in
    ``snapshot.corrupt`` and counts as holding nothing, a foreign child name in
    ``snapshot.invalid``; a malformed or foreign ``nodes/`` child is reported by
    :class:`~allot.zk.members.Members`.
    SQL unavailable: the SQLAlchemy error propagates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from kazoo.client import KazooClient
from sqlalchemy.orm import Session, sessionmaker

from allot import mirror
from allot.classify import Classification, classify
from allot.mirror import NodeObservation
from allot.zk.members import Members, read_members
from allot.zk.model import AllAssignments
from allot.zk.paths import ZkPaths
from allot.zk.store import AssignmentStore
from models.states import NodeState


@dataclass(frozen=True)
class Observation:
    """What one read saw.

    ``snapshot``: the stored assignment (with its version and ``corrupt`` entries); ``held``:
    the buckets of every readable entry (``snapshot.buckets_by_node()``); ``members``: the
    membership; ``classes``: the nodes classified at ``now``; ``recorded``: the nodes SQL last
    recorded live or suspect (a node that stopped cleanly leaves no other trace).
    """

    snapshot: AllAssignments
    held: Mapping[str, list[int]]
    members: Members
    classes: Classification
    recorded: frozenset[str]
    now: dt.datetime

    def node_observations(self) -> list[NodeObservation]:
        """Every node's state for the ``node`` table (:func:`allot.mirror.record_nodes`): the
        live nodes with weight and host, then the suspect and offline ones, then the nodes SQL
        still records present that are now gone without a trace (offline)."""
        live = self.members.live
        found = [
            NodeObservation(
                key, NodeState.LIVE, node.weight, node.info.host if node.info is not None else None
            )
            for key, node in live.items()
        ]
        found += [NodeObservation(key, NodeState.SUSPECT) for key in self.classes.suspect]
        found += [NodeObservation(key, NodeState.OFFLINE) for key in self.classes.offline]
        seen = set(live) | set(self.classes.suspect) | set(self.classes.offline)
        found += [NodeObservation(key, NodeState.OFFLINE) for key in sorted(self.recorded - seen)]
        return found


def observe(
    client: KazooClient,
    paths: ZkPaths,
    sessions: sessionmaker[Session],
    *,
    now: dt.datetime,
    offline_timeout: float,
) -> Observation:
    """Read the cluster and classify its nodes (see the module docstring).

    Args:
        client: a started ZooKeeper client.
        paths: the ZooKeeper layout to read.
        sessions: where to read the ``node`` rows from.
        now: the time the grace periods are measured at.
        offline_timeout: the grace period in seconds (``node_offline_timeout``).

    Raises:
        AccessDenied: ZooKeeper refused reading the assignment.
        kazoo.exceptions.KazooException: ZooKeeper could not be read.
        sqlalchemy.exc.SQLAlchemyError: SQL could not be read.
    """
    snapshot = AssignmentStore(client, paths).read_all()
    members = read_members(client, paths)
    with sessions() as session:
        departed = mirror.departed_since(session)
        recorded = mirror.present_nodes(session)
    held = snapshot.buckets_by_node()
    classes = classify(
        {key: node.weight for key, node in members.live.items()},
        held,
        set(snapshot.nodes) | set(snapshot.corrupt),
        departed,
        now,
        offline_timeout,
    )
    return Observation(snapshot, held, members, classes, frozenset(recorded), now)
