"""Concurrent registrations from several real processes pick buckets consistently.

Four ``allot tables register`` processes register overlapping name sets at the same time, one
name per transaction. Because the registry lock serializes registrations, replaying the rows in
``table_id`` order through the rule "emptiest bucket, ties to the lowest id" must give exactly
the buckets stored: a pick made from a stale count, or a lost count, would break the replay.
"""

from __future__ import annotations

import heapq
import json
import subprocess
from pathlib import Path

from sqlalchemy import Engine, select

from allot.database import upgrade
from allot.testing.processes import inherited_env
from models import Bucket, TableIdentifier
from tests.cli import ALLOT_COMMAND

PROCESSES = 4
OWN_NAMES = 200
SHARED_NAMES = 60


def test_concurrent_registrations_never_pick_inconsistently_or_lose_a_count(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    # Given a database with 10 buckets and four name lists that overlap on SHARED_NAMES tables
    upgrade(engine, bucket_count=10)
    shared = [f"c.shared.t{i}" for i in range(SHARED_NAMES)]
    inputs = [
        "\n".join([f"c.p{p}.t{i}" for i in range(OWN_NAMES)] + shared[p::2] + shared)
        for p in range(PROCESSES)
    ]
    env = inherited_env() | {"ALLOT_DATABASE_URL": database_url, "ALLOT_BUCKET_COUNT": "10"}

    # When four processes register them at the same time, one name per transaction
    files = []
    for number, text in enumerate(inputs):
        files.append(tmp_path / f"names-{number}.txt")
        files[-1].write_text(text)
    command = [*ALLOT_COMMAND, "tables", "register", "--batch-size", "1"]
    procs = [
        subprocess.Popen(
            [*command, "--file", str(file), "-f", "json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for file in files
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr

    # Then every table exists once, and every process saw the same bucket for a shared table
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                TableIdentifier.catalog_name,
                TableIdentifier.db_name,
                TableIdentifier.table_name,
                TableIdentifier.bucket_id,
            ).order_by(TableIdentifier.table_id)
        ).all()
        counts = dict(connection.execute(select(Bucket.bucket_id, Bucket.table_count)).all())
    stored = {f"{c}.{d}.{t}": bucket for c, d, t, bucket in rows}
    assert len(rows) == len(stored) == PROCESSES * OWN_NAMES + SHARED_NAMES
    created = 0
    for stdout, _ in outputs:
        report = json.loads(stdout)
        created += report["registered"]
        for entry in report["tables"]:
            assert stored[entry["name"]] == entry["bucket_id"], entry
    assert created == len(rows)

    # And the counters match the rows, and replaying in commit order reproduces every pick
    actual: dict[int, int] = dict.fromkeys(range(1, 11), 0)
    for *_, bucket in rows:
        actual[bucket] += 1
    assert counts == actual
    heap = [(0, bucket_id) for bucket_id in range(1, 11)]
    for *_, bucket in rows:
        count, expected = heapq.heappop(heap)
        assert bucket == expected
        heapq.heappush(heap, (count + 1, expected))
