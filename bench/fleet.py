"""Periodic work at catalog scale: allot's per-table fan-out against plain Celery.

Run: ``.venv/bin/python bench/fleet.py --tables 2000 --period 10 --periods 4`` (``--help``
for options; ``--record`` appends to bench/RESULTS.md). It starts its own ZooKeeper, Redis and
database (:mod:`bench.harness`), registers ``--tables`` tables in 100 buckets, of which
``--slow`` (the first names, one per bucket) run 1.5 periods, and three workers
(``--concurrency`` pool processes each) loading :mod:`bench.fleet_tasks`. Two phases on the
same catalog and the same kind of workers:

plain: workers without the periodic task; this process, like beat, sends one ``fleet.plain``
    per table per period to Celery's default queue, for ``--periods`` periods;
allot: the workers restarted with ``fleet.periodic`` (``every=--period``); the nodes tick.

Per period and phase: the share of tables whose run of that period committed (the slow
tables, their bucket-mates and the rest apart), the lag from the period's start to the
commit (p50, p99), runs/s, the workers' CPU (main and pool processes, Redis, the database
server) per run, and the SQL rows allot adds to its run history, per day extrapolated.
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
from sqlalchemy import func, select

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
        return list(connection.execute(query.where(fleet_run.c.kind == kind)).tuples())


def history_rows(cluster: LocalCluster) -> int:
    with cluster.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(TableTaskRun)).scalar_one())


def wait_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


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
    results: dict[str, tuple[list[dict[str, float]], list[float], int, float]] = {}
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
        cpu = used(cluster)
        for period in periods:
            wait_until(period * every)
            with app.producer_or_acquire() as producer:
                for name in names:
                    app.send_task("fleet.plain", args=[name, period], producer=producer)
        wait_until((periods[-1] + 1) * every + 1.6 * every)
        found = rows(cluster, "plain")
        ran = sum(1 for _, p, _ in found if p in periods)
        results["plain"] = (*measure(found, periods, every, groups), ran, used(cluster) - cpu)
        stop_workers(cluster)

        # allot: the same catalog as a periodic table task
        start_workers(cluster, env | {"FLEET_MODE": "allot"}, args.concurrency)
        first = int(time.time() // every) + 1
        periods = list(range(first, first + args.periods))
        wait_until(first * every)
        cpu, history = used(cluster), history_rows(cluster)
        wait_until((periods[-1] + 1) * every + 1.6 * every)
        found = rows(cluster, "allot")
        ran = sum(1 for _, p, _ in found if p in periods)
        added = history_rows(cluster) - history
        results["allot"] = (*measure(found, periods, every, groups), ran, used(cluster) - cpu)
        stop_workers(cluster)

    table = make_table(
        f"{args.tables} tables, 100 buckets, every {every:g} s, {args.slow} slow (1.5 periods), "
        f"3 workers x {args.concurrency}, {args.database}",
        ["kind", "period", "rest", "mates", "slow", "lag p50 s", "lag p99 s"],
        left=["kind"],
    )
    summary = make_table("totals", ["kind", "runs/s", "CPU ms/run", "history rows/day"], ["kind"])
    for kind, (shares, lags, ran, cpu_used) in results.items():
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
        per_day = args.tables * 86400 / every
        rows_day: float = added / max(ran, 1) * per_day if kind == "allot" else 0.0
        summary.add_row(
            kind,
            f"{ran / (args.periods * every):.1f}",
            f"{1000 * cpu_used / max(ran, 1):.2f}",
            f"{rows_day:,.0f}",
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
            "Periodic work at catalog scale (bench/fleet.py)",
            command_line(),
            [
                "lag: from the period's start to the run's commit, every run of the measured "
                "periods; history rows: table_task_run rows allot added per run, times the "
                "runs of a day; CPU: workers (main and pool), Redis and the database server.",
            ],
            text,
        )


if __name__ == "__main__":
    main()
