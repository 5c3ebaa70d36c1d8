"""Periodic work at catalog scale: allot's per-table fan-out against plain Celery.

Run: ``.venv/bin/python bench/fleet.py --tables 200 --period 10 --periods 4`` (``--help``
for options; ``--record`` appends to bench/RESULTS.md). It starts its own ZooKeeper, Redis and
database (:mod:`bench.harness`), registers ``--tables`` tables in 100 buckets, of which
``--slow`` (the first names, one per bucket) run 1.5 periods, and three workers
(``--concurrency`` pool processes each) loading :mod:`bench.fleet_tasks`. Two phases on the
same catalog and the same kind of workers:

plain: workers without the periodic task; this process, like beat, sends one ``fleet.plain``
    per table per period to Celery's default queue, for ``--periods`` periods;
allot: the workers restarted with ``fleet.periodic`` (``every=--period``); the nodes tick;
    the first period after they serve is a warm-up, not measured.

Per period and phase: the share of tables whose run of that period committed (the slow
tables, their bucket-mates and the rest apart), the lag from the period's start to the
commit (p50, p99), runs/s, the CPU (workers' main and pool processes, Redis, the database
server) over the measured periods per run committed in them, and the SQL rows allot adds to
its run history per run, and per day (every table every period). A phase waits for its runs
up to 4 periods after its last, so a phase that cannot keep up shows as missing runs.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from allot.testing.cluster import QUICK_START, LocalCluster
from bench.fleet_tasks import fleet_run, metadata
from bench.harness import DATABASES, local_cluster
from bench.results import command_line, make_table, record_section
from bench.work_cluster import allot_app, cpu_seconds, served
from models.schema import TableTaskRun

BUCKETS = 100
WORKERS = ("node1", "node2", "node3")


def start_workers(cluster: LocalCluster, env: dict[str, str], concurrency: int) -> None:
    for name in WORKERS:
        cluster.processes[name] = cluster.group.worker(
            name, cluster.env | env, *QUICK_START, "-c", str(concurrency)
        )
    cluster.wait_for(lambda: served(cluster), "every bucket served and fenced", 180)


def stop_workers(cluster: LocalCluster) -> None:
    for name in WORKERS:
        cluster.processes.pop(name).stop()


def used(cluster: LocalCluster) -> float:
    cpu = cpu_seconds(cluster)
    return cpu["main"] + cpu["pool"] + cpu["redis"] + cpu["database"]


def rows(cluster: LocalCluster, kind: str) -> list[tuple[str, int, float]]:
    with cluster.engine.connect() as connection:
        query = select(fleet_run.c.table_name, fleet_run.c.period, fleet_run.c.ended)
        found = connection.execute(query.where(fleet_run.c.kind == kind))
        return [(str(table), int(period), float(ended)) for table, period, ended in found]


def history_rows(cluster: LocalCluster, periods: list[int]) -> int:
    """The ``table_task_run`` rows (attempts) of the runs of ``periods``."""
    with cluster.engine.connect() as connection:
        run_ids = connection.execute(select(TableTaskRun.run_id)).scalars()
        return sum(1 for run_id in run_ids if int(run_id.rsplit(":", 1)[1]) in periods)


def ended_within(cluster: LocalCluster, kind: str, periods: list[int], every: float) -> int:
    """The runs of ``kind`` (any period) that committed while ``periods`` lasted: the runs
    the CPU measured over those periods paid for."""
    start, end = periods[0] * every, (periods[-1] + 1) * every
    return sum(1 for _, _, ended in rows(cluster, kind) if start <= ended < end)


def wait_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def settle(
    cluster: LocalCluster, kind: str, periods: list[int], every: float, expected: set[str]
) -> None:
    """Wait until every table of ``expected`` committed a run of ``kind`` for each of
    ``periods``, and 1.6 periods past the last (a slow run of the last period has ended), or
    until 4 periods past the last: a phase that cannot keep up shows as missing runs."""
    after = (periods[-1] + 1) * every + 1.6 * every
    deadline = (periods[-1] + 1) * every + 4 * every
    wanted = len(expected) * len(periods)
    while time.time() < deadline:
        done = {(t, p) for t, p, _ in rows(cluster, kind) if p in periods and t in expected}
        if len(done) >= wanted and time.time() >= after:
            return
        time.sleep(0.5)


def measure(
    found: list[tuple[str, int, float]],
    periods: list[int],
    every: float,
    groups: dict[str, set[str]],
) -> tuple[list[dict[str, float]], list[float]]:
    """Per period: the share of each group's tables with a run of that period; all lags."""
    by_period: dict[int, set[str]] = defaultdict(set)
    lags = []
    for table, period, ended in found:
        if period in periods:
            by_period[period].add(table)
            lags.append(ended - period * every)
    shares = [
        {group: len(by_period[p] & tables) / len(tables) for group, tables in groups.items()}
        for p in periods
    ]
    return shares, lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", type=int, default=10_000)
    parser.add_argument("--period", type=float, default=30.0)
    parser.add_argument("--periods", type=int, default=4)
    parser.add_argument("--slow", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--database", choices=DATABASES, default="sqlite")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    every = args.period
    names = [f"fleet.db.t{index:05d}" for index in range(args.tables)]
    slow = set(names[: args.slow])
    env = {
        "ALLOT_TASK_MODULES": "bench.fleet_tasks",
        "FLEET_PERIOD": str(every),
        "FLEET_SLOW": ",".join(sorted(slow)),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    results: dict[str, tuple[list[dict[str, float]], list[float], int, float, float]] = {}
    with local_cluster("allot-fleet-", BUCKETS, args.database) as cluster:
        from allot.names import parse_table_name
        from allot.registry import register_tables
        from models.engine import session_factory

        metadata.create_all(cluster.engine)
        with session_factory(cluster.engine).begin() as session:
            registered = register_tables(session, [parse_table_name(n) for n in names])
        bucket = {name: reg.bucket_id for name, reg in zip(names, registered, strict=True)}
        slow_buckets = {bucket[name] for name in slow}
        mates = {n for n in names if bucket[n] in slow_buckets and n not in slow}
        groups = {"rest": set(names) - slow - mates, "mates": mates, "slow": slow}

        # plain Celery: a beat-like sender, one task per table per period, a shared queue
        start_workers(cluster, env | {"FLEET_MODE": "plain"}, args.concurrency)
        app = allot_app(cluster)
        first = int(time.time() // every) + 1
        periods = list(range(first, first + args.periods))
        wait_until(first * every)
        cpu = used(cluster)
        for period in periods:
            wait_until(period * every)
            with app.producer_or_acquire() as producer:
                for name in names:
                    app.send_task("fleet.plain", args=[name, period], producer=producer)
        wait_until((periods[-1] + 1) * every)
        cpu = (used(cluster) - cpu) / max(1, ended_within(cluster, "plain", periods, every))
        settle(cluster, "plain", periods, every, set(names))
        found = rows(cluster, "plain")
        ran = sum(1 for _, p, _ in found if p in periods)
        results["plain"] = (*measure(found, periods, every, groups), ran, cpu, 0.0)
        stop_workers(cluster)

        # allot: the same catalog as a periodic table task
        start_workers(cluster, env | {"FLEET_MODE": "allot"}, args.concurrency)
        # one period of warm-up: the nodes tick as soon as they serve, mid-period, while
        # buckets still move between the workers joining one after the other
        first = int(time.time() // every) + 2
        periods = list(range(first, first + args.periods))
        wait_until(first * every)
        cpu = used(cluster)
        wait_until((periods[-1] + 1) * every)
        cpu = (used(cluster) - cpu) / max(1, ended_within(cluster, "allot", periods, every))
        settle(cluster, "allot", periods, every, set(names) - slow)
        found = rows(cluster, "allot")
        ran = sum(1 for _, p, _ in found if p in periods)
        per_run = history_rows(cluster, periods) / max(ran, 1)
        results["allot"] = (*measure(found, periods, every, groups), ran, cpu, per_run)
        stop_workers(cluster)

    table = make_table(
        f"{args.tables} tables, 100 buckets, every {every:g} s, {args.slow} slow (1.5 periods), "
        f"3 workers x {args.concurrency}, {args.database}",
        ["kind", "period", "rest", "mates", "slow", "lag p50 s", "lag p99 s"],
        left=["kind"],
    )
    summary = make_table(
        "totals",
        ["kind", "runs/s", "CPU ms/run", "history rows/run", "history rows/day"],
        ["kind"],
    )
    for kind, (shares, lags, ran, cpu_run, per_run) in results.items():
        lags.sort()
        p50 = statistics.median(lags) if lags else float("nan")
        p99 = lags[min(len(lags) - 1, int(0.99 * len(lags)))] if lags else float("nan")
        for index, share in enumerate(shares):
            table.add_row(
                kind,
                str(index + 1),
                f"{share['rest']:.3f}",
                f"{share['mates']:.3f}",
                f"{share['slow']:.3f}",
                f"{p50:.2f}" if index == 0 else "",
                f"{p99:.2f}" if index == 0 else "",
            )
        summary.add_row(
            kind,
            f"{ran / (args.periods * every):.1f}",
            f"{1000 * cpu_run:.2f}",
            f"{per_run:.2f}",
            f"{per_run * args.tables * 86400 / every:,.0f}",
        )
    plain_rate = results["plain"][2]
    ratio = results["allot"][2] / plain_rate if plain_rate else float("nan")
    out = io.StringIO()
    console = Console(file=out, width=100)
    console.print(table)
    console.print(summary)
    console.print(f"runs/s allot / plain: {ratio:.2f}")
    text = out.getvalue()
    print(text)
    if args.record:
        record_section(
            Path(__file__).with_name("RESULTS.md"),
            f"Periodic work at catalog scale (bench/fleet.py, {args.database})",
            command_line(),
            [
                "lag: from the period's start to the run's commit, every run of the measured "
                "periods; history rows: table_task_run rows (attempts) of the measured "
                "periods' runs per committed run, and per day for every table every period; "
                "CPU: workers (main and pool), Redis and the database server over the "
                "measured periods, per run committed in them.",
            ],
            text,
        )


if __name__ == "__main__":
    main()
