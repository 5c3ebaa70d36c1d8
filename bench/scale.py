"""Scale benchmark: 1,000 members joining within a second, 16,384 buckets.

Run: ``.venv/bin/python bench/scale.py`` (``--help`` for options; ``--record`` writes
bench/RESULTS.md). It starts its own ZooKeeper and Redis (allot.testing), a SQLite database
with 16,384 buckets and two real ``celery worker`` processes (which run the cycles and are two
of the members), then starts the other members as lightweight processes
(:mod:`bench.members`, 100 real ZooKeeper sessions each, each queueing for the trigger duty like
a worker node does). It measures:

- how many cycles the burst of joins costs (cycles that planned, not skipped retries);
- the convergence time: from the last join until ZooKeeper shows every member holding its
  share (polled every 50 ms);
- where the burst's applying cycle spent its time (the workers log each cycle's steps, ms);
- a steady-state cycle's time at that size, run in this process;

The burst starts, and the measures at rest are taken, only once the two workers' lease loops
have caught up (the leases in ZooKeeper are those of the buckets the workers hold): the workers
hold 8,192 buckets each before the burst and release all but a few dozen after it, and that
churn is not the cost of a cycle or of a node at rest;
- what a worker holding 8,192 leases costs ZooKeeper at rest, before the burst (its lease
  loop's periodic check reads a slice of its leases, not all of them);
- what each session costs ZooKeeper at rest, from the server's four-letter words: requests
  per second per session (``cons``, two samples ``--window`` seconds apart) and watches per
  session (``wchc``), so that a node's cost can be compared across fleet sizes
  (``--members 100`` against ``--members 1000``).
"""

from __future__ import annotations

import argparse
import io
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from allot.testing.cluster import LocalCluster, steady_cycles
from allot.zk.paths import ZkPaths
from bench.harness import local_cluster
from bench.results import make_table, record_section

BUCKETS = 16_384
HERE = Path(__file__).resolve().parent


def balanced(held: dict[str, list[int]], members: int) -> bool:
    """Every one of ``members`` nodes holds the floor or the ceiling of an equal share."""
    low = BUCKETS // members
    counts = [len(buckets) for buckets in held.values() if buckets]
    return len(counts) == members and all(low <= c <= low + 1 for c in counts)


def cycles_logged(cluster: LocalCluster) -> int:
    """Cycles that read the cluster and planned (each logs its headline once; skips do not)."""
    return sum(
        cluster.count_in_logs(f"cycle {outcome} (") for outcome in ("applied", "unchanged")
    ) + cluster.count_in_logs("cycle aborted")


def four_letter(address: str, word: str) -> str:
    """The answer of ZooKeeper at ``host:port`` to a four-letter word (it must be whitelisted:
    allot.testing.servers whitelists ``cons`` and ``wchc``)."""
    host, port = address.split(",")[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(word.encode())
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def received_per_session(address: str) -> dict[str, int]:
    """``{session id: requests received}`` of every connection (``cons``)."""
    found = {}
    for line in four_letter(address, "cons").splitlines():
        session = re.search(r"sid=(0x[0-9a-f]+)", line)
        received = re.search(r"recved=(\d+)", line)
        if session and received:
            found[session.group(1)] = int(received.group(1))
    return found


def watches_per_session(address: str) -> dict[str, int]:
    """``{session id: watches it holds}`` (``wchc``; sessions holding none are absent)."""
    found: dict[str, int] = {}
    session = None
    for line in four_letter(address, "wchc").splitlines():
        if line.startswith("0x"):
            session = line.strip()
            found[session] = 0
        elif line.strip().startswith("/") and session is not None:
            found[session] += 1
    return found


def at_rest(address: str, window: float) -> dict[str, float]:
    """Per-session cost at rest: requests per second over ``window`` s, and watches; taken
    once the number of watches has stopped changing (members still queueing for the
    trigger duty after the burst are not at rest yet)."""
    last, deadline = -1, time.monotonic() + 120
    while time.monotonic() < deadline:
        total = sum(watches_per_session(address).values())
        if total == last:
            break
        last = total
        time.sleep(2)
    first = received_per_session(address)
    time.sleep(window)
    second = received_per_session(address)
    rates = [(second[k] - first[k]) / window for k in second if k in first]
    watches = watches_per_session(address)
    counts = [watches.get(k, 0) for k in second]
    return {
        "sessions": len(second),
        "rate_median": statistics.median(rates),
        "rate_max": max(rates),
        "rate_total": sum(rates),
        "watches_median": statistics.median(counts),
        "watches_max": max(counts),
        "watches_total": sum(watches.values()),
    }


def leases_settled(cluster: LocalCluster) -> bool:
    """Whether the leases in ZooKeeper are exactly those of the buckets the two workers hold
    (the members run no lease loop): the workers' lease loops have caught up."""
    held = cluster.zk()
    wanted = {b for name in ("node1", "node2") for b in held.get(cluster.key(name), [])}
    taken = cluster.client.get_children(ZkPaths(cluster.settings.zk_root).leases)
    return {int(name) for name in taken if name.isdigit()} == wanted


def applied_cycles(cluster: LocalCluster) -> list[str]:
    """The log lines of the applying cycles the workers ran: headline, time and steps (ms)."""
    return [
        line[line.index("cycle applied") :]
        for process in cluster.group.started
        for line in process.output().splitlines()
        if "cycle applied (" in line
    ]


def tasks_received(cluster: LocalCluster) -> int:
    """``allot.assign`` messages the workers received (skipped retries included)."""
    return cluster.count_in_logs("allot.assign[", " received")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1000, help="members besides the workers")
    parser.add_argument("--per-process", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=10, help="steady-state cycles to time")
    parser.add_argument(
        "--no-duty", action="store_true",
        help="members only register (no trigger duty): the cost of the joins alone",
    )  # fmt: skip
    parser.add_argument(
        "--window", type=float, default=10.0, help="seconds between the two `cons` samples"
    )
    parser.add_argument("--record", action="store_true", help="write bench/RESULTS.md")
    args = parser.parse_args()
    console = Console(width=120, record=True, file=io.StringIO() if args.record else None)
    members: list[subprocess.Popen[str]] = []
    total = args.members + 2
    with local_cluster(
        "allot-scale-", BUCKETS, zk_session_timeout=10, assign_interval=30
    ) as cluster:
        try:
            for name in ("node1", "node2"):
                cluster.worker(name)
            cluster.wait_for(
                lambda: balanced(cluster.zk(), 2), "two workers sharing the buckets", 90
            )
            # the storm starts from a cluster at rest: both workers hold their 8,192 leases and
            # consume their 8,192 queues (Celery adds a queue in a few ms: half a minute)
            cluster.wait_for(lambda: leases_settled(cluster), "the workers' leases", 300)
            cluster.wait_for(
                lambda: cluster.count_in_logs("Started consuming from") >= BUCKETS,
                "the workers consuming their queues",
                600,
                interval=2,
            )
            # what a worker holding 8,192 leases costs ZooKeeper at rest (its lease loop)
            big = at_rest(cluster.settings.zk_hosts, args.window)
            before = cycles_logged(cluster)
            received = tasks_received(cluster)
            for index in range(0, args.members, args.per_process):
                count = min(args.per_process, args.members - index)
                members.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(HERE / "members.py"),
                            "--count",
                            str(count),
                            "--prefix",
                            f"m{index // args.per_process}",
                        ],
                        env=cluster.env,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                )
            for process in members:  # every session open, nobody registered yet
                assert process.stdout is not None
                assert process.stdout.readline().strip() == "ready"
            started = time.time()
            for process in members:
                assert process.stdin is not None
                process.stdin.write("go\n")
                process.stdin.flush()
            joined = []
            for process in members:
                assert process.stdout is not None
                joined.append(float(process.stdout.readline().split()[1]))
            last_join = max(joined)
            cluster.wait_for(
                lambda: balanced(cluster.zk(), total), "convergence", 300, interval=0.05
            )
            converged = time.time() - last_join
            time.sleep(3)  # let retries that were already queued run, so they are counted
            cycles = cycles_logged(cluster) - before
            tasks = tasks_received(cluster) - received
            storm = cluster.wait_for(  # logged once its SQL mirror is done, after ZooKeeper
                lambda: [line for line in applied_cycles(cluster) if " 2 live " not in line],
                "the burst cycle's log line",
                120,
            )
            # at rest: the workers released the leases of the buckets the storm moved away
            cluster.wait_for(lambda: leases_settled(cluster), "the workers' leases", 300)
            rest = at_rest(cluster.settings.zk_hosts, args.window)
            durations = steady_cycles(cluster, args.cycles)
        finally:
            for process in members:
                if process.stdin is not None:
                    process.stdin.close()
            for process in members:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
    table = make_table(
        f"allot at scale: {total} members, {BUCKETS:,} buckets, SQLite",
        ("measure", "value", "target", "met"),
    )
    joining = last_join - started
    table.add_row("members joining (s, from 'go' to the last join)", f"{joining:.2f}", "<= 1",
                  "yes" if joining <= 1 else "NO")  # fmt: skip
    table.add_row("cycles run for the burst", str(cycles), "a handful (<= 5)",
                  "yes" if cycles <= 5 else "NO")  # fmt: skip
    table.add_row("allot.assign tasks received (skips included)", str(tasks), "", "")
    table.add_row("convergence after the last join (s)", f"{converged:.2f}", "<= 2",
                  "yes" if converged <= 2 else "NO")  # fmt: skip
    table.add_row(f"steady-state cycle, median of {len(durations)} (ms)",
                  f"{statistics.median(durations):.0f}", "", "")  # fmt: skip
    table.add_row("requests/s of a worker holding 8,192 leases, at rest (before the burst)",
                  f"{big['rate_max']:.2f}", "", "")  # fmt: skip
    table.add_row(f"ZooKeeper sessions at rest ({rest['sessions']})", "", "", "")
    table.add_row("  requests/s per session, median / max",
                  f"{rest['rate_median']:.2f} / {rest['rate_max']:.2f}", "", "")  # fmt: skip
    table.add_row("  requests/s, all sessions", f"{rest['rate_total']:.0f}", "", "")
    table.add_row("  watches per session, median / max",
                  f"{rest['watches_median']:g} / {rest['watches_max']:g}", "", "")  # fmt: skip
    table.add_row("  watches, all sessions", f"{rest['watches_total']}", "", "")
    console.print(table)
    for line in storm:
        console.print(f"burst: {line}")
    if args.record:
        text = console.export_text()  # clears the buffer: export once
        record_section(
            HERE / "RESULTS.md",
            "Scale: 1,000 members, 16,384 buckets",
            "python bench/scale.py --record",
            [
                "Members are real ZooKeeper sessions, 100 per process, each queueing for the "
                "trigger duty as a worker node does; two real Celery workers run the cycles.",
                "Cycles counted from the workers' logs (each cycle that planned logs one "
                "headline; skipped retries log none).",
            ],
            text,
        )
        print(text)


if __name__ == "__main__":
    main()
