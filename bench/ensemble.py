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
import time
from functools import partial
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from allot.cycle import AssignmentCycle
from allot.settings import Settings
from allot.testing.cluster import listed_twice, watching_for_double_owners, zk_assignment
from allot.testing.databases import migrated_sqlite
from allot.testing.ensemble import start_ensemble
from allot.testing.polling import repeating, wait_for
from allot.zk.client import connect
from allot.zk.codec import MemberInfo
from allot.zk.members import read_members
from allot.zk.paths import ZkPaths
from allot.zk.registration import NodeRegistration
from allot.zk.store import AssignmentStore
from bench.results import make_table, record_section
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
    database_url = migrated_sqlite(workdir, 100)
    engine = make_engine(database_url)
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

    def run_cycle() -> None:
        try:
            outcome = str(cycle.run("bench").outcome)
        except Exception as exc:
            outcome = type(exc).__name__
        log.append((time.monotonic(), outcome))

    def completed_after(moment: float) -> float | None:
        """When the first cycle completed after ``moment``, None while none has."""
        done = [t for t, o in log if t > moment and o in ("applied", "unchanged")]
        return min(done) if done else None

    # the observer's own server may be the one killed: its failed reads are skipped
    observe = partial(zk_assignment, AssignmentStore(reader, paths))
    elections, recoveries, disturbed, lost = [], [], [], 0
    try:
        with (
            repeating(run_cycle, 0.02, join_timeout=60),
            watching_for_double_owners(observe, 0.02) as double_readings,
        ):
            time.sleep(2)
            for trial in range(args.trials):
                leader = ensemble.leader()
                killed = time.monotonic()
                ensemble.kill(leader)
                ensemble.leader()
                elections.append(time.monotonic() - killed)
                done = wait_for(
                    partial(completed_after, killed),
                    "a completed cycle after the kill",
                    60,
                    interval=0.01,
                )
                recoveries.append(done - killed)
                disturbed.append(sum(1 for t, o in log if killed < t <= done and o != "unchanged"))
                live = read_members(reader, paths).live
                lost += MEMBERS - sum(1 for key in live if key.endswith("@bench"))
                console.print(f"trial {trial + 1}: leader {leader} killed")
                ensemble.restart(leader)
                time.sleep(1)
    finally:
        for client in [*members, cycler, reader]:
            client.stop()
            client.close()
        engine.dispose()
        ensemble.stop()
    doubles = sum(map(listed_twice, double_readings))
    table = make_table(
        f"ZooKeeper leader killed under cycles: 3 servers, {MEMBERS} members",
        ("measure", "n", "median", "max"),
    )
    for name, values in (
        ("kill -> new leader serving (s)", elections),
        ("kill -> next completed cycle (s)", recoveries),
        ("cycles failed or aborted before it", disturbed),
    ):
        table.add_row(
            name, str(len(values)), f"{statistics.median(values):.2f}", f"{max(values):.2f}"
        )
    table.add_row("member sessions lost", str(args.trials), str(lost), "")
    table.add_row("reads that saw a bucket listed twice", "", str(doubles), "")
    console.print(table)
    if args.record:
        text = console.export_text()  # clears the buffer: export once
        record_section(
            HERE / "RESULTS.md", "ZooKeeper ensemble: the leader killed under cycles",
            f"python bench/ensemble.py --trials {args.trials} --record",
            ["Cycles loop every 20 ms in one process; the observer reads every 20 ms."],
            text,
        )  # fmt: skip
        print(text)


if __name__ == "__main__":
    main()
