"""One read of the cluster, classified: what the assignment cycle plans from (step 3 of
DESIGN.md's cycle) and what ``allot status`` shows.

:func:`observe` reads from ZooKeeper everything a decision needs: the stored assignment, the
membership, when each departed node was first seen gone (``{root}/departures``) and the last
published epoch; it repairs what a foreign writer left unplannable (:mod:`allot.cycle.repair`) and
classifies the nodes live / suspect / offline (:mod:`allot.cycle.classify`). From SQL it reads only
what the mirror needs (which nodes SQL last recorded present, the epoch SQL mirrors), and an
SQL outage leaves those empty and says so in :attr:`Observation.sql_problem`: SQL never
decides. Pure reads: it writes nothing, and it takes the client and the session factory from
its caller (it opens no connection).

Failure modes:
    SUSPENDED: the ZooKeeper reads retry through ``client.retry`` until the connection returns
    or the retry gives up (``RetryFailedError``, a ``KazooException``, propagates).
    LOST (session expired): reads hold no ephemeral state; kazoo's new session answers them.
    Corrupt data in ZooKeeper: never raised; an unreadable assignment entry is reported in
    ``snapshot.corrupt`` and counts as holding nothing, a foreign child name in
    ``snapshot.invalid``; a malformed or foreign ``nodes/`` child is reported by
    :class:`~allot.zk.members.Members`.
    SQL unavailable: reported in ``sql_problem``, never raised.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from kazoo.client import KazooClient
from sqlalchemy.orm import Session, sessionmaker

from allot.cycle import mirror
from allot.cycle.classify import Classification, classify
from allot.cycle.measured import Measured
from allot.cycle.mirror import SQL_UNAVAILABLE, NodeObservation, RecordedNode, node_rows_match
from allot.cycle.repair import repair_holdings
from allot.zk.departures import Departures, departures_from, departures_path
from allot.zk.last_cycle import last_cycle_from
from allot.zk.members import Members, read_members
from allot.zk.paths import ZkPaths
from allot.zk.snapshot import AllAssignments
from allot.zk.store import AssignmentStore
from models.states import NodeState


@dataclass(frozen=True)
class Observation:
    """What one read saw.

    ``snapshot``: the stored assignment (with its version and ``corrupt`` entries); ``held``:
    the buckets of every readable entry, repaired (:func:`allot.cycle.repair.repair_holdings`:
    ids out of range dropped, a bucket listed twice kept by one node) with ``repairs`` saying
    per node what was dropped; ``members``: the membership; ``departures``: the stored grace
    starts; ``classes``: the nodes classified at ``now``; ``recorded``: the nodes SQL last
    recorded live or suspect (a node that stopped cleanly leaves no other trace);
    ``epoch_floor``: the highest epoch known anywhere (``assignment-version``, the last
    published cycle, SQL's mirror), below which no epoch may be published; ``sql_problem``:
    why SQL could not be read (None when it could); ``measured``: the pins and load the cycle
    planned with (:mod:`allot.cycle.measured`; none until it read them).
    """

    snapshot: AllAssignments
    held: Mapping[str, list[int]]
    members: Members
    classes: Classification
    recorded: frozenset[str]
    now: dt.datetime
    repairs: Mapping[str, str]
    departures: Departures
    epoch_floor: int
    sql_problem: str | None = None
    sql_epoch: int = 0
    sql_nodes: Mapping[str, RecordedNode] = field(default_factory=dict)
    sql_plan_epoch: int | None = None
    measured: Measured = field(default_factory=Measured)

    @property
    def sql_in_step(self) -> bool:
        """True when SQL was read and already says what this observation would make it say:
        nothing but allot's plans wrote ZooKeeper's assignment since ``assignment-version``,
        SQL mirrors that epoch, records the plan it names as applied at that epoch, and
        records every node's state. Then a cycle that moves nothing writes
        nothing to SQL: SQL's owners change only in the transaction that records the plan and
        raises the epoch (an epoch re-published from SQL's own names an older plan, so SQL's
        owners are compared then)."""
        version = self.snapshot.version
        return (
            self.sql_problem is None
            and self.snapshot.written_by_allot
            and self.sql_epoch == version.epoch
            and self.sql_plan_epoch == version.epoch
            and node_rows_match(self.sql_nodes, self.node_observations())
        )

    def departure_times(self) -> dict[str, int]:
        """The departures map this observation implies (epoch ms): every node gone but still
        holding an entry, with the time it was first seen gone."""
        return {
            key: int(moment.timestamp() * 1000) for key, moment in self.classes.departed_at.items()
        }

    def node_observations(self) -> list[NodeObservation]:
        """Every node's state for the ``node`` table (:func:`allot.cycle.mirror.record_nodes`): the
        live nodes with weight and host, then the suspect and offline ones, then the nodes SQL
        still records present that are now gone without a trace (offline)."""
        live = self.members.live
        found = [
            NodeObservation(key, NodeState.LIVE, node.weight, node.info.host)
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
    bucket_count: int,
) -> Observation:
    """Read the cluster and classify its nodes (see the module docstring).

    Args:
        client: a started ZooKeeper client.
        paths: the ZooKeeper layout to read.
        sessions: where to read the ``node`` rows from.
        now: the time the grace periods are measured at.
        offline_timeout: the grace period in seconds (``node_offline_timeout``).
        bucket_count: valid bucket ids are ``1..bucket_count``.

    Raises:
        AccessDenied: ZooKeeper refused reading the assignment.
        kazoo.exceptions.KazooException: ZooKeeper could not be read.
    """
    # the small reads go out first and are answered while the subtree is read (one session's
    # requests are answered in order): a handful of round trips whatever the fleet's size
    pending_nodes = client.get_children_async(paths.nodes, include_data=True)
    pending_departures = client.get_async(departures_path(paths))
    pending_published = client.get_async(paths.last_cycle)
    snapshot = AssignmentStore(client, paths).read_all()
    members = read_members(client, paths, pending_nodes)
    departures = departures_from(client, paths, pending_departures)
    published = last_cycle_from(client, paths, pending_published) or {}
    recorded: dict[str, RecordedNode] = {}
    sql_epoch, sql_plan_epoch, sql_problem = 0, None, None
    try:
        with sessions() as session:
            recorded = mirror.recorded_nodes(session)
            sql_epoch = mirror.mirrored_epoch(session)
            sql_plan_epoch = mirror.applied_epoch(session, snapshot.version.plan_id)
    except SQL_UNAVAILABLE as exc:
        sql_problem = str(exc.orig if exc.orig is not None else exc).splitlines()[0]
    repaired = repair_holdings(snapshot.buckets_by_node(), bucket_count, members.live)
    classes = classify(
        {key: node.weight for key, node in members.live.items()},
        repaired.held,
        set(snapshot.nodes) | set(snapshot.corrupt),
        {key: _moment(ms) for key, ms in departures.times.items()},
        now,
        offline_timeout,
    )
    published_epoch = published.get("epoch")
    floor = max(
        snapshot.version.epoch,
        sql_epoch,
        published_epoch if isinstance(published_epoch, int) else 0,
    )
    return Observation(
        snapshot,
        repaired.held,
        members,
        classes,
        frozenset(recorded),
        now,
        repaired.problems,
        departures,
        floor,
        sql_problem,
        sql_epoch,
        recorded,
        sql_plan_epoch,
    )


def _moment(epoch_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)
