"""``python -m tests.e2e.frozen_holder ZK_HOSTS ZK_ROOT DATABASE_URL SESSION_TIMEOUT``: take the
assignment lock and start a fenced SQL write mirroring epoch 50 under it, then stop this whole
process (SIGSTOP) between the fence's claim and the lock's confirmation, as a GC pause or a
frozen VM would. Once continued, say how the write ended and what the ZooKeeper client knew
then. Each step is one line on standard output."""

from __future__ import annotations

import os
import signal
import sys

from sqlalchemy.orm import Session

from allot.cycle.fence import write_fenced
from allot.errors import LockLost
from allot.settings import Settings
from allot.zk.client import connect
from allot.zk.lock import AssignmentLock
from allot.zk.paths import ZkPaths
from models.engine import make_engine, session_factory

FROZEN_EPOCH = 50


def main(argv: list[str]) -> None:
    zk_hosts, zk_root, database_url, session_timeout = argv
    timeout = float(session_timeout)
    settings = Settings(zk_hosts=zk_hosts, zk_root=zk_root, zk_session_timeout=timeout)
    client = connect(settings)
    client.add_listener(lambda state: print(f"state {state}", flush=True))
    guard = AssignmentLock(client, ZkPaths(zk_root)).acquire(timeout=30)
    assert guard is not None
    print(f"holding token {guard.token}", flush=True)

    def freeze(_session: Session) -> None:
        print("claimed", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)

    sessions = session_factory(make_engine(database_url))
    try:
        write_fenced(sessions, (1, guard.token), guard.confirm, freeze, epoch=FROZEN_EPOCH)
    except LockLost as exc:
        print(f"rolled back with the client {client.state}: {exc}", flush=True)
    else:
        print("committed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
