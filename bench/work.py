"""Table-work benchmark: what fencing costs, how fast work follows a moved bucket, and a kill.

Run: ``.venv/bin/python bench/work.py`` (``--help`` for options; ``--record`` writes
bench/RESULTS.md). It starts its own ZooKeeper and Redis (allot.testing), a database (SQLite,
or ``--database postgresql``), registers 3 tables per bucket (100 buckets) and starts three
``celery worker`` processes (one pool process each, as ``make run`` does) loading
:mod:`bench.work_tasks`. ZooKeeper session 4 s, offline timeout 2 s, and
``ALLOT_REDELIVERY_TIMEOUT`` the default, 300 s (``--redelivery-timeout``): the messages a
killed worker had taken come back when their buckets' new owners take them, not after it. It
measures, in one run on the same workers:

(a) throughput: ``--tasks`` table tasks inserting one row in ``ctx.commit()`` against the same
    insert as a plain Celery task on Celery's default queue, and as a plain task acknowledged
    late (a control), in alternating batches; and what a run costs in the pool process: SQL
    statements, transactions, seconds in SQL, in the task and on the CPU;
(b) handoff: a fourth worker joins; from the plan's commit to the first run of a moved bucket
    on it, for idle buckets and for buckets whose donor is running a ``--busy-seconds`` task;
(c) ``kill -9`` of a worker while ``--rate`` tasks/s keep coming: from the kill to the first
    run of each of its buckets on a new owner, and to the commit of each message it had taken
    (running or reserved); runs lost, runs committed twice.

See :mod:`bench.work_phases` for how each is measured.
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import sys
from dataclasses import dataclass, field
from math import inf
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from allot.settings import Settings
from bench.harness import DATABASES, local_cluster
from bench.results import command_line, make_table, record_section
from bench.work_cluster import Sent, allot_app, committed_ids, register, repeated, served
from bench.work_phases import Handoff, Kill, Rate, handoff, kill, summary, throughput
from bench.work_tasks import STARTED_LOG, TASKS, Tally, read_tallies

WORKERS = ("node1", "node2", "node3")
SESSION_TIMEOUT = 4.0
OFFLINE_TIMEOUT = 2.0
REDELIVERY_TIMEOUT: float = Settings.model_fields["redelivery_timeout"].default
TABLES_PER_BUCKET = 3
WARM_UP = 300


@dataclass
class Results:
    """Everything one run measured."""

    rates: dict[str, Rate] = field(default_factory=lambda: {kind: Rate() for kind in TASKS})
    counted: dict[str, Tally] = field(default_factory=dict)
    moves: Handoff = field(default_factory=Handoff)
    dead: Kill = field(default_factory=Kill)
    lost: int = 0
    """Table tasks sent during the whole run and never committed."""
    twice: tuple[int, int] = (0, 0)
    """Runs committed twice, runs whose row landed twice (:func:`repeated`)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks of each kind in (a)")
    parser.add_argument("--batches", type=int, default=4, help="batches of each kind in (a)")
    parser.add_argument("--busy-seconds", type=float, default=3.0, help="T of the busy task")
    parser.add_argument("--trials", type=int, default=3, help="joins of a fourth worker in (b)")
    parser.add_argument("--rate", type=float, default=25.0, help="tasks/s sent during (c)")
    parser.add_argument(
        "--redelivery-timeout",
        type=float,
        default=REDELIVERY_TIMEOUT,
        help="ALLOT_REDELIVERY_TIMEOUT of the workers (default: the settings' default)",
    )
    parser.add_argument("--database", choices=DATABASES, default="sqlite")
    parser.add_argument("--record", action="store_true", help="write bench/RESULTS.md")
    args = parser.parse_args()
    console = Console(width=150, record=True, file=io.StringIO() if args.record else None)
    results = measure(args, console)
    console.print(throughput_table(results))
    console.print(steps_table(results.moves))
    console.print(results_table(args, results))
    for note in results.moves.notes:
        console.print(f"note: {note}")
    if args.record:
        text = console.export_text()
        record_section(
            Path(__file__).with_name("RESULTS.md"),
            f"Table work ({'PostgreSQL' if args.database == 'postgresql' else 'SQLite'})",
            command_line(),
            [
                f"Linux {platform.release()}; ZooKeeper and Redis of the benchmark's own "
                "(allot.testing), 3 workers (`celery worker -c 1`), 100 buckets, 300 tables",
                f"ZooKeeper session {SESSION_TIMEOUT:g} s, offline timeout {OFFLINE_TIMEOUT:g} s, "
                f"ALLOT_REDELIVERY_TIMEOUT={args.redelivery_timeout:g} s (default "
                f"{REDELIVERY_TIMEOUT:g} s), ALLOT_HANDOFF_TIMEOUT default (30 s)",
            ],
            text,
        )
        print(text)


def measure(args: argparse.Namespace, console: Console) -> Results:
    """Start the cluster, run (a), (b) and (c) on it, check every run, stop it."""
    results = Results()
    with local_cluster(
        "allot-work-",
        100,
        database=args.database,
        zk_session_timeout=SESSION_TIMEOUT,
        node_offline_timeout=OFFLINE_TIMEOUT,
        redelivery_timeout=args.redelivery_timeout,
        task_modules="bench.work_tasks",
        assign_interval=30,
    ) as cluster:
        tables = register(cluster, TABLES_PER_BUCKET)
        tallies = cluster.workdir / "tallies"
        tallies.mkdir()
        cluster.env[STARTED_LOG] = str(cluster.workdir / "started.log")
        for name in WORKERS:
            cluster.worker(name, BENCH_TALLY_DIR=str(tallies))
        cluster.wait_for(
            lambda: (zk := served(cluster)) is not None and len(zk) == len(WORKERS),
            "three workers serving every bucket",
            120,
        )
        sent = Sent(allot_app(cluster))
        console.print(f"warm-up: {WARM_UP} tasks of each kind; cluster in {cluster.workdir}")
        for kind in TASKS:
            throughput(cluster, sent, tables, kind, WARM_UP, Rate())
        per_batch = max(args.tasks // args.batches, 1)
        for batch in range(args.batches):
            order = list(TASKS)[:: 1 if batch % 2 == 0 else -1]
            for kind in order:
                throughput(cluster, sent, tables, kind, per_batch, results.rates[kind])
            console.print(f"(a) batch {batch + 1}: {per_batch} tasks of each kind, {order}")
        results.counted = read_tallies(tallies)
        for trial in range(args.trials):
            handoff(cluster, sent, tables, args.busy_seconds, results.moves)
            console.print(f"(b) trial {trial + 1}: node4 joined and left")
        kill(cluster, sent, tables, args.rate, WORKERS[0], results.dead)
        console.print(f"(c) {results.dead.victim} killed, {results.dead.buckets} buckets")
        results.lost = len(sent.table_ids() - committed_ids(cluster.engine))
        results.twice = repeated(cluster.engine)
    return results


CPU_PARTS = {
    "pool": "pool",
    "main": "main",
    "redis": "Redis",
    "zookeeper": "ZK",
    "database": "PG",
    "bench": "bench",
    "other": "other",
    "all": "all",
}
"""Where CPU time goes (:func:`~bench.work_cluster.cpu_seconds`; ``other``: the rest)."""


def throughput_table(results: Results) -> Table:
    """(a): the rates, and what one run costs."""
    table = make_table(
        "(a) throughput of 3 workers x 1 pool process, and what one run costs",
        (
            "task",
            "tasks/s",
            "runs timed",
            "SQL stmts",
            "SQL txns",
            "SQL ms",
            "task ms",
            "task CPU",
            *(f"CPU {name}" for name in CPU_PARTS.values()),
        ),
        left=("task",),
    )
    table.columns[1].min_width = len("tasks/s")
    table.caption = (
        f"table: {TASKS['table']}, fenced; plain: {TASKS['plain']}; late: {TASKS['late']}, "
        "the plain task acknowledged late. "
        "Per run, counted in the pool processes from task_prerun to task_postrun: SQL "
        "statements (BEGIN included), transactions, ms in SQL and in the task (wall clock), CPU "
        "ms of the task. Then CPU ms per run over the timed windows (/proc): the workers' pool "
        "and main processes, Redis, ZooKeeper, the PostgreSQL backends of the benchmark's "
        "database (SQLite runs in the pool), this process, the rest (kernel, other users' "
        "processes), the whole machine. Sent at "
        + ", ".join(f"{r.sent / r.send_seconds:.0f}/s ({k})" for k, r in results.rates.items())
        + "; runs still to do when a batch's last task was sent: "
        + ", ".join(f"{k} {min(r.backlog)}-{max(r.backlog)}" for k, r in results.rates.items())
        + "."
    )
    for kind, name in TASKS.items():
        rate, tally = results.rates[kind], results.counted.get(name, Tally())
        runs, timed = max(tally.runs, 1), max(rate.runs, 1)
        cpu = dict(rate.cpu)
        cpu["other"] = cpu["all"] - sum(used for part, used in cpu.items() if part != "all")
        table.add_row(
            kind,
            f"{rate.per_second:.0f}",
            f"{rate.runs:,}",
            f"{tally.statements / runs:.1f}",
            f"{tally.transactions / runs:.1f}",
            f"{tally.sql_seconds * 1000 / runs:.2f}",
            f"{tally.task_seconds * 1000 / runs:.2f}",
            f"{tally.cpu_seconds * 1000 / runs:.2f}",
            *(f"{cpu[part] * 1000 / timed:.2f}" for part in CPU_PARTS),
        )
    return table


def steps_table(moves: Handoff) -> Table:
    """(b): where an idle bucket's handoff goes, step by step, from the workers' logs."""
    table = make_table(
        "(b) an idle bucket changing hands: seconds after the plan's commit",
        ("step", "n", "median", "min", "max"),
        left=("step",),
    )
    for step, times in [*moves.steps.items(), ("first run starts", moves.idle)]:
        table.add_row(step, *summary(times))
    return table


def results_table(args: argparse.Namespace, results: Results) -> Table:
    """Every figure against its target."""
    moves, dead, lost, twice = results.moves, results.dead, results.lost, results.twice
    table = make_table(
        f"allot table work: 3 workers, 100 buckets, {args.database}",
        ("measure", "n", "median", "min", "max", "target", "met"),
        left=("measure", "target"),
    )

    def spread(
        measure: str, values: list[float], target: str = "", met: bool | None = None
    ) -> None:
        table.add_row(measure, *summary(values), target, "" if met is None else yes(met))

    def single(measure: str, value: str, target: str = "", met: bool | None = None) -> None:
        table.add_row(measure, "", value, "", "", target, "" if met is None else yes(met))

    per_second = {kind: max(rate.per_second, 1e-9) for kind, rate in results.rates.items()}
    ratio = per_second["table"] / per_second["plain"]
    single("(a) table / plain tasks per second", f"{ratio:.2f}", ">= 0.8", ratio >= 0.8)
    single("    late-ack plain / plain", f"{per_second['late'] / per_second['plain']:.2f}")
    single("    table / late-ack plain", f"{per_second['table'] / per_second['late']:.2f}")
    own = {kind: cluster_cpu_per_run(rate) for kind, rate in results.rates.items()}
    single(
        "    plain / table CPU per run of the cluster's processes",
        f"{own['plain'] / max(own['table'], 1e-9):.2f}",
    )
    busy, budget = args.busy_seconds, SESSION_TIMEOUT + OFFLINE_TIMEOUT + 2
    idle_median = statistics.median(moves.idle) if moves.idle else float("inf")
    spread("(b) commit -> first run, idle bucket (s)", moves.idle, "median <= 1", idle_median <= 1)
    spread(
        f"(b) commit -> first run, busy bucket, T = {busy:g} s (s)",
        moves.busy,
        f"<= T + 1 = {busy + 1:g}",
        max(moves.busy, default=inf) <= busy + 1,
    )
    spread("    busy task still running at the commit (s)", moves.busy_left)
    spread(
        "    busy task's end -> first run (s)",
        moves.after_busy,
        "<= 1",
        max(moves.after_busy, default=inf) <= 1,
    )
    spread(
        f"(c) kill -9 -> first run on a new owner, per bucket of {dead.victim} (s)",
        dead.back,
        f"<= {budget:g} (session {SESSION_TIMEOUT:g} + offline {OFFLINE_TIMEOUT:g} + 2)",
        max(dead.back, default=inf) <= budget,
    )
    spread("    kill -9 -> the new assignment committed in ZooKeeper (s)", dead.reassigned)
    spread(
        "(c) kill -9 -> a run the dead node was running starts again (s)",
        dead.redelivered,
        f"< redelivery {args.redelivery_timeout:g} s",
    )
    spread(
        f"(c) kill -9 -> a message {dead.victim} had taken committed elsewhere (s)",
        dead.taken,
        f"<= {budget:g}",
        bool(dead.taken) and max(dead.taken) <= budget,
    )
    single(
        "    of those, never committed",
        str(dead.taken_lost),
        "0",
        dead.taken_lost == 0,
    )
    single(
        f"(c) runs lost: of {dead.sent} sent, not committed {dead.waited:.0f} s after the kill",
        str(dead.lost),
        "0",
        dead.lost == 0,
    )
    single("runs lost, whole benchmark (table tasks)", str(lost), "0", lost == 0)
    single("runs committed twice (table_task_run)", str(twice[0]), "0", twice[0] == 0)
    single("runs whose row landed twice (bench_effect)", str(twice[1]), "0", twice[1] == 0)
    return table


def cluster_cpu_per_run(rate: Rate) -> float:
    """CPU seconds per timed run of the workers, Redis, ZooKeeper and PostgreSQL: what bounds
    the rate on a machine with no other load and no spare core."""
    parts = ("pool", "main", "redis", "zookeeper", "database")
    used = sum(rate.cpu.get(part, 0.0) for part in parts)
    return used / max(rate.runs, 1)


def yes(met: bool) -> str:
    return "yes" if met else "NO"


if __name__ == "__main__":
    main()
