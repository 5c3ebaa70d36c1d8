"""Benchmark of the table registry on SQLite and PostgreSQL.

Run: ``.venv/bin/python bench/registry.py`` (``--help`` for sizes). For each database it
registers N tables in bulk (``register_in_batches``, 10,000 names per transaction), then looks up
random tables by name through the ``table_assignment`` view, one query each, and prints a table
with both databases side by side. ``--big`` adds PostgreSQL with 1,000,000 tables and shows the
lookup's query plan. Each run uses a fresh SQLite file and a fresh PostgreSQL database (dropped
afterwards); set ALLOT_TEST_POSTGRES_URL for another server.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from sqlalchemy import Engine, create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from allot import registry
from allot.database import upgrade
from allot.names import TableName
from allot.testing.databases import POSTGRES_ADMIN_URL, postgres_database
from bench.results import make_table
from models.engine import make_engine, session_factory

LOOKUP_SQL = text(
    "SELECT node_key, bucket_id FROM table_assignment "
    "WHERE catalog_name = :c AND db_name = :d AND table_name = :t"
)


@dataclass
class Result:
    database: str
    tables: int
    register_s: float
    lookups: int
    lookup_median_ms: float
    lookup_p99_ms: float


def table_names(count: int) -> list[TableName]:
    """``count`` names spread over 10 catalogs and 1,000 databases, like a real catalog."""
    return [TableName(f"cat{i % 10}", f"db{i % 1000}", f"table_{i:07d}") for i in range(count)]


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="allot-bench-") as directory:
        yield f"sqlite:///{Path(directory) / 'allot.db'}"


def run(
    label: str,
    url: str,
    count: int,
    lookups: int,
    seed: int,
    show_plan: Callable[[str], None] | None = None,
) -> Result:
    engine: Engine = make_engine(url)
    try:
        upgrade(engine, bucket_count=100)
        names = table_names(count)
        started = time.perf_counter()
        registry.register_in_batches(session_factory(engine), names)
        register_s = time.perf_counter() - started
        if engine.dialect.name == "postgresql":
            with engine.begin() as connection:
                connection.execute(text("ANALYZE"))
        sample = random.Random(seed).choices(names, k=lookups)
        timings = []
        with engine.connect() as connection:
            for name in sample:
                began = time.perf_counter()
                row = connection.execute(
                    LOOKUP_SQL, {"c": name.catalog, "d": name.database, "t": name.table}
                ).one()
                timings.append(time.perf_counter() - began)
                assert row.bucket_id is not None
            if show_plan is not None:
                first = sample[0]
                plan = connection.execute(
                    text("EXPLAIN " + str(LOOKUP_SQL)),
                    {"c": first.catalog, "d": first.database, "t": first.table},
                ).scalars()
                show_plan("\n".join(plan))
        timings.sort()
        return Result(
            label,
            count,
            register_s,
            lookups,
            statistics.median(timings) * 1000,
            timings[int(len(timings) * 0.99) - 1] * 1000,
        )
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=100_000, help="tables to register")
    parser.add_argument("--lookups", type=int, default=10_000, help="random lookups by name")
    parser.add_argument("--big", type=int, default=0, help="also PostgreSQL with this many tables")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    console = Console(width=150)
    results = []
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with sqlite_database() as url:
            console.print(f"SQLite: registering {args.tables:,} tables ...")
            results.append(run("SQLite", url, args.tables, args.lookups, args.seed))
        with postgres_database(admin, "allot_bench_") as url:
            console.print(f"PostgreSQL: registering {args.tables:,} tables ...")
            results.append(run("PostgreSQL", url, args.tables, args.lookups, args.seed))
        if args.big:
            with postgres_database(admin, "allot_bench_") as url:
                console.print(f"PostgreSQL: registering {args.big:,} tables ...")
                results.append(
                    run(
                        "PostgreSQL",
                        url,
                        args.big,
                        args.lookups,
                        args.seed,
                        show_plan=lambda plan: console.print(f"lookup plan:\n{plan}"),
                    )
                )
    finally:
        admin.dispose()
    base = results[0]
    table = make_table(
        "allot registry: bulk registration and lookups by name",
        (
            "database",
            "tables",
            "register (s)",
            "tables/s",
            "vs SQLite",
            "lookups",
            "lookup median (ms)",
            "lookup p99 (ms)",
            "vs SQLite",
        ),
    )
    for result in results:
        table.add_row(
            result.database,
            f"{result.tables:,}",
            f"{result.register_s:.2f}",
            f"{result.tables / result.register_s:,.0f}",
            f"{(result.tables / result.register_s) / (base.tables / base.register_s):.2f}x",
            f"{result.lookups:,}",
            f"{result.lookup_median_ms:.3f}",
            f"{result.lookup_p99_ms:.3f}",
            f"{result.lookup_median_ms / base.lookup_median_ms:.2f}x",
        )
    console.print(table)


if __name__ == "__main__":
    main()
