"""Ensemble benchmark: killing the ZooKeeper leader of a three-server ensemble under cycles.

Run: ``.venv/bin/python bench/ensemble.py`` (``--trials N``; ``--record`` writes
bench/RESULTS.md). It starts three ZooKeeper servers (allot.testing.ensemble), a SQLite
database, five member sessions and a loop of assignment cycles in this process, with a 10 s
session timeout. Each trial kills the current leader (SIGKILL) and measures the time until a
new leader serves, the time until the next cycle completes (``applied`` or ``unchanged``),
how many cycles failed or aborted meanwhile, and whether any member lost its session; then it
restarts the killed server. An observer reads the assignment every 20 ms throughout and counts
any bucket listed twice.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from allot.cycle import AssignmentCycle
from allot.database import upgrade
from allot.settings import Settings
from allot.testing.ensemble import start_ensemble
from allot.zk.client import connect
from allot.zk.codec import MemberInfo
from allot.zk.members import read_members
from allot.zk.paths import ZkPaths
from allot.zk.registration import NodeRegistration
from allot.zk.store import AssignmentStore
from bench.results import record_section
from models.engine import make_engine, session_factory

HERE = Path(__file__).resolve().parent
MEMBERS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="write bench/RESULTS.md")
    args = parser.parse_args()
    console = Console(width=120, record=True, file=io.StringIO() if args.record else None)
    workdir = Path(tempfile.mkdtemp(prefix="allot-ensemble-"))
    ensemble = start_ensemble(workdir / "zk")
    database_url = f"sqlite:///{workdir / 'allot.db'}"
    engine = make_engine(database_url)
    upgrade(engine, 100)
    settings = Settings(
        zk_hosts=ensemble.hosts, zk_root="/bench/allot", zk_session_timeout=10.0,
        database_url=database_url,
    )  # fmt: skip
    paths = ZkPaths(settings.zk_root)
    members = [connect(settings) for _ in range(MEMBERS)]
    for index, client in enumerate(members):
        NodeRegistration(
            client, paths, MemberInfo(f"m{index}@bench", "bench", 1, 1.0, 0)
        ).register()
    cycler, reader = connect(settings), connect(settings)
    cycle = AssignmentCycle(cycler, session_factory(engine), settings)
    log: list[tuple[float, str]] = []
    doubles, stop = [0], threading.Event()

    def cycles() -> None:
        while not stop.wait(0.02):
            try:
                outcome = str(cycle.run("bench").outcome)
            except Exception as exc:
                outcome = type(exc).__name__
            log.append((time.monotonic(), outcome))

    def observe() -> None:
        store = AssignmentStore(reader, paths)
        while not stop.wait(0.02):
            try:
                held = store.read_all().buckets_by_node()
            except Exception:  # noqa: S112 - the reader's own server may be the one killed
                continue
            listed = [bucket for buckets in held.values() for bucket in buckets]
            doubles[0] += len(listed) - len(set(listed))

    threads = [threading.Thread(target=cycles), threading.Thread(target=observe)]
    for thread in threads:
        thread.start()
    elections, recoveries, disturbed, lost = [], [], [], 0
    try:
        time.sleep(2)
        for trial in range(args.trials):
            leader = ensemble.leader()
            killed = time.monotonic()
            ensemble.kill(leader)
            ensemble.leader()
            elections.append(time.monotonic() - killed)
            while not any(t > killed and o in ("applied", "unchanged") for t, o in log):
                if time.monotonic() - killed > 60:
                    raise AssertionError("no cycle completed within 60 s of the kill")
                time.sleep(0.01)
            done = min(t for t, o in log if t > killed and o in ("applied", "unchanged"))
            recoveries.append(done - killed)
            disturbed.append(sum(1 for t, o in log if killed < t <= done and o != "unchanged"))
            live = read_members(reader, paths).live
            lost += MEMBERS - sum(1 for key in live if key.endswith("@bench"))
            console.print(f"trial {trial + 1}: leader {leader} killed")
            ensemble.restart(leader)
            time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        for client in [*members, cycler, reader]:
            client.stop()
            client.close()
        engine.dispose()
        ensemble.stop()
    table = Table(title=f"ZooKeeper leader killed under cycles: 3 servers, {MEMBERS} members")
    for column in ("measure", "n", "median", "max"):
        table.add_column(column, justify="right")
    for name, values in (
        ("kill -> new leader serving (s)", elections),
        ("kill -> next completed cycle (s)", recoveries),
        ("cycles failed or aborted before it", disturbed),
    ):
        table.add_row(
            name, str(len(values)), f"{statistics.median(values):.2f}", f"{max(values):.2f}"
        )
    table.add_row("member sessions lost", str(args.trials), str(lost), "")
    table.add_row("reads that saw a bucket listed twice", "", str(doubles[0]), "")
    console.print(table)
    if args.record:
        record_section(
            HERE / "RESULTS.md", "ZooKeeper ensemble: the leader killed under cycles",
            f"python bench/ensemble.py --trials {args.trials} --record",
            ["Cycles loop every 20 ms in one process; the observer reads every 20 ms."],
            console.export_text(),
        )  # fmt: skip
        print(console.export_text())


if __name__ == "__main__":
    main()
