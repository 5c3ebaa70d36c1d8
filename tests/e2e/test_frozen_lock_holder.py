"""A lock holder frozen between the SQL fence's claim and the lock's confirmation, past its
session, and resumed while the next holder writes SQL: it writes nothing, and it keeps the next
holder's SQL waiting no longer than the confirmation's deadline (allot.zk.lock.CONFIRM_TIMEOUT),
not until its ZooKeeper client finds out that its session is gone.

The frozen holder is a process of its own (``tests.e2e.frozen_holder``) in a network namespace
(:mod:`allot.testing.netns`) whose link to ZooKeeper is cut both ways while it is stopped: its
session expires and the server's closing of the connection never reaches it, so once resumed
its client believes itself connected until its next ping goes unanswered (as after a long
pause on a link that drops packets), and the ZooKeeper answer it waits for never comes.
SQLite: the fence row's lock is the whole database's write lock there.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from allot.cycle.fence import write_fenced
from allot.cycle.mirror import FENCE
from allot.database import upgrade
from allot.settings import Settings
from allot.testing.netns import Lab
from allot.testing.processes import Processes, inherited_env
from allot.testing.servers import ServerProcess, start_zookeeper
from allot.zk.client import connect
from allot.zk.lock import CONFIRM_TIMEOUT, AssignmentLock
from allot.zk.paths import ZkPaths
from models.engine import make_engine, session_factory
from models.schema import MirrorState
from tests.e2e.frozen_holder import FROZEN_EPOCH

SESSION_TIMEOUT = 6.0
"""A's: its client waits for a ping's answer a third of it (2 s) before it calls the link dead,
well past the confirmation deadline."""
NEW_EPOCH = 10


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab(servers=1) as made:
        yield made


@pytest.fixture
def lab_zookeeper(lab: Lab, tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_zookeeper(tmp_path / "zookeeper", host=lab.addresses[0])
    yield server
    server.stop()


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'allot.db'}")
    upgrade(engine, bucket_count=100)
    yield engine
    engine.dispose()


def stopped(pid: int) -> bool:
    """True when process ``pid`` is stopped by a signal."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def fence_row(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as connection:
        row = connection.execute(
            select(MirrorState.generation, MirrorState.holder_token, MirrorState.epoch).where(
                MirrorState.name == FENCE
            )
        ).one()
        return row[0], row[1], row[2]


def test_a_resumed_zombie_holder_writes_nothing_and_blocks_sql_only_until_its_deadline(
    lab: Lab,
    lab_zookeeper: ServerProcess,
    sqlite: Engine,
    processes: Processes,
    zk_root: str,
) -> None:
    # Given holder A, in a namespace, frozen between its fence's claim and its confirmation
    space = lab.namespace()
    url = sqlite.url.render_as_string(hide_password=False)
    args = [sys.executable, "-m", "tests.e2e.frozen_holder", lab_zookeeper.address, zk_root]
    args += [url, str(SESSION_TIMEOUT)]
    env = inherited_env() | {"PYTHONUNBUFFERED": "1"}
    a = processes.start("holder-a", space.command(args), env)
    processes.wait_for(lambda: "claimed" in a.output() and stopped(a.pid), "A frozen", 60)

    # When A's link to ZooKeeper dies, its session expires, B takes the lock, and A resumes
    # while B's first fenced SQL write waits for A's transaction
    space.blackhole(lab.addresses[0], both_ways=True)
    settings = Settings(zk_hosts=lab_zookeeper.address, zk_root=zk_root)
    client = connect(settings)
    try:
        guard = AssignmentLock(client, ZkPaths(zk_root)).acquire(timeout=60)
        assert guard is not None
        written: list[int] = []

        def write_b() -> None:
            written.append(
                write_fenced(
                    session_factory(sqlite),
                    (1, guard.token),
                    guard.confirm,
                    lambda _session: guard.token,
                    epoch=NEW_EPOCH,
                )
            )

        b = threading.Thread(target=write_b)
        b.start()
        resumed = time.monotonic()
        a.signal_group(signal.SIGCONT)
        b.join(60)
        a_when_b_committed = a.output()
        print(f"B's write ended {time.monotonic() - resumed:.2f} s after A resumed")
    finally:
        client.stop()
        client.close()

    # Then B's write committed, A's did not (SQL mirrors B's epoch, below A's), and A gave up
    # at its confirmation deadline while its client still believed itself connected: B waited
    # for A's deadline, not for A's client to learn that its session had ended
    assert written == [guard.token]
    assert fence_row(sqlite) == (1, guard.token, NEW_EPOCH)
    assert NEW_EPOCH < FROZEN_EPOCH
    processes.wait_for(lambda: "rolled back" in a.output(), "A's end", 30)
    assert "committed" not in a.output()
    assert (
        f"rolled back with the client CONNECTED: ZooKeeper did not confirm the assignment "
        f"lock within {CONFIRM_TIMEOUT:g} s" in a_when_b_committed
    )
    assert "state SUSPENDED" not in a_when_b_committed.split("rolled back")[0]
