"""The assignment cycle on a ZooKeeper rebuilt from scratch, against SQL that mirrored the old
one (real ZooKeeper, SQLite and PostgreSQL).

The rebuilt ZooKeeper's lock znodes have ``czxid``s far below the token SQL's fence holds, and
its epoch starts again; the cycle's fence is the pair (ZooKeeper generation, token), so the
rebuilt one's first cycle allocates a larger generation and takes SQL over, while a holder
still running on the old ZooKeeper is refused (allot/cycle/fence.py, docs/table-work.md
case 14).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kazoo.client import KazooClient
from sqlalchemy import Engine, insert, select, update

from allot.cycle.fence import FencedSql
from allot.errors import Superseded
from allot.generation import decode_generation
from allot.zk.lock import AssignmentLock
from allot.zk.paths import ZkPaths
from models import Bucket, Plan
from models.engine import make_engine, session_factory
from models.schema import FenceGeneration, MirrorState
from models.states import PlanStatus
from tests.integration.conftest import Cluster, sizes

OLD_GENERATION = 3
OLD_TOKEN = 10**12
"""The old ensemble's lock czxid: it ran for a long time, its transaction ids are large."""
OLD_EPOCH = 500
STUCK_PLAN = "0ld0ld0ld0ld0ld0ld0ld0ld0ld0ld00"


def mirror_an_old_ensemble(engine: Engine) -> None:
    """SQL as the old ensemble (generation 3) left it: its holder's fence and epoch, every
    bucket owned by one of its nodes, and a plan left ``applying`` by a cycle that crashed."""
    with engine.begin() as connection:
        connection.execute(update(FenceGeneration).values(generation=OLD_GENERATION))
        connection.execute(
            update(MirrorState).values(
                generation=OLD_GENERATION, holder_token=OLD_TOKEN, epoch=OLD_EPOCH
            )
        )
        connection.execute(update(Bucket).values(node_key="old@h", epoch=OLD_EPOCH))
        connection.execute(
            insert(Plan).values(
                plan_id=STUCK_PLAN,
                trigger="beat",
                status=PlanStatus.APPLYING,
                strategy="sticky",
                base_epoch=OLD_EPOCH,
                epoch=None,
                max_moves=None,
                moves=1,
            )
        )


def fence(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as connection:
        row = connection.execute(
            select(MirrorState.generation, MirrorState.holder_token, MirrorState.epoch)
        ).one()
    return (row.generation, row.holder_token, row.epoch)


def zk_generation_of(cluster: Cluster) -> int:
    data, _ = cluster.client.get(ZkPaths(cluster.settings.zk_root).generation)
    return decode_generation(data)


def test_a_rebuilt_zookeeper_applies_and_mirrors_over_sql_of_the_old_one(
    cluster: Cluster,
) -> None:
    # Given SQL mirroring an old ensemble (generation 3, lock token 10**12, epoch 500, a plan
    # left applying) and a ZooKeeper rebuilt from scratch: a fresh root, no generation, lock
    # czxids far below that token
    mirror_an_old_ensemble(cluster.engine)
    for key in ("a@h", "b@h"):
        cluster.join(key)
    # When a cycle runs
    report = cluster.cycle().run("beat")
    # Then it applies a plan to ZooKeeper, at an epoch above the one SQL mirrored
    assert (report.outcome, report.sql) == ("applied", None)
    assert report.epoch is not None
    assert report.epoch > OLD_EPOCH
    # And mirrors it to SQL, under a new generation and the new lock's (smaller) token
    assert sizes(cluster.assert_consistent()) == {"a@h": 50, "b@h": 50}
    generation, token, epoch = fence(cluster.engine)
    assert generation == zk_generation_of(cluster) == OLD_GENERATION + 1
    assert 0 < token < OLD_TOKEN
    assert epoch == report.epoch
    # And the old ensemble's plan, which is not in this ZooKeeper, is failed
    assert report.recovered == [STUCK_PLAN]
    with session_factory(cluster.engine)() as session:
        stuck = session.get(Plan, STUCK_PLAN)
        assert stuck is not None
        assert stuck.status == PlanStatus.FAILED
    # And the next cycle finds nothing to do
    again = cluster.cycle().run("beat")
    assert (again.outcome, again.epoch, again.sql) == ("unchanged", report.epoch, None)


def test_a_holder_of_the_old_generation_is_superseded_once_the_rebuilt_one_wrote(
    cluster: Cluster, zk_connect: Callable[[], KazooClient]
) -> None:
    # Given a holder on the old ensemble (generation 3, still holding its lock there; its
    # czxid, 10**12, is far above any of the rebuilt ensemble's) that wrote SQL last
    old_root = cluster.settings.zk_root.rsplit("/", 1)[0] + "/old-ensemble"
    old_lock = AssignmentLock(zk_connect(), ZkPaths(old_root), "old-holder")
    guard = old_lock.acquire()
    assert guard is not None
    guard._token = OLD_TOKEN  # as if its lock znode had that czxid
    with cluster.engine.begin() as connection:
        connection.execute(update(FenceGeneration).values(generation=OLD_GENERATION))
    old = FencedSql(session_factory(cluster.engine), guard, cluster.clock, lambda: OLD_GENERATION)
    try:
        old.write(lambda session: None, epoch=OLD_EPOCH)
        assert fence(cluster.engine) == (OLD_GENERATION, OLD_TOKEN, OLD_EPOCH)
        # When the rebuilt ZooKeeper's cycle runs
        for key in ("a@h", "b@h"):
            cluster.join(key)
        report = cluster.cycle().run("beat")
        assert report.outcome == "applied"
        after = fence(cluster.engine)
        assert after[0] == OLD_GENERATION + 1
        # Then the old holder, its lock still held, writes nothing: its generation is older,
        # whatever its token and epoch
        guard.confirm()
        with pytest.raises(Superseded, match="generation 3"):
            old.write(
                lambda session: session.execute(update(Bucket).values(node_key="old@h")),
                epoch=10**6,
            )
        with pytest.raises(Superseded):
            old.write(lambda session: None)
    finally:
        old_lock.release()
    # And SQL still says what the rebuilt ZooKeeper says
    assert fence(cluster.engine) == after
    assert sizes(cluster.assert_consistent()) == {"a@h": 50, "b@h": 50}


def test_a_rebuilt_zookeeper_without_sql_fails_over_and_sql_catches_up(cluster: Cluster) -> None:
    # Given SQL mirroring an old ensemble, unreachable, and a rebuilt ZooKeeper: no generation
    # can be allocated
    mirror_an_old_ensemble(cluster.engine)
    for key in ("a@h", "b@h"):
        cluster.join(key)
    dead = make_engine("postgresql+psycopg://allot@127.0.0.1:1/none")
    try:
        # When a cycle runs
        report = cluster.cycle(sessions=session_factory(dead)).run("beat")
    finally:
        dead.dispose()
    # Then it applies from ZooKeeper alone and says SQL was unavailable
    assert report.outcome == "applied"
    assert report.sql is not None
    assert "SQL unavailable" in report.sql
    assert sizes(cluster.zk_assignment()) == {"a@h": 50, "b@h": 50}
    assert not cluster.client.exists(ZkPaths(cluster.settings.zk_root).generation)
    # And when SQL is back, the next cycle allocates the generation and catches up, the
    # epoch re-published above SQL's
    back = cluster.cycle().run("beat")
    assert (back.outcome, back.sql) == ("unchanged", None)
    assert back.epoch is not None
    assert back.epoch >= OLD_EPOCH
    cluster.assert_consistent()
    assert fence(cluster.engine)[0] == zk_generation_of(cluster) == OLD_GENERATION + 1
