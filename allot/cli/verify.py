"""``allot verify``: the invariants (:mod:`allot.inspect.invariants`), checked against the
live cluster (:mod:`allot.inspect.verify`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import typer

from allot.cli._common import FormatOption, OutputFormat, console, print_json
from allot.cli._context import open_database, open_zookeeper
from allot.inspect.invariants import Facts, Verdict, evaluate
from allot.inspect.verify import read_facts


def verify(output: FormatOption = OutputFormat.table) -> None:
    """Check the invariants on the live cluster; exit 0 when all hold, 1 listing every one
    that does not (an error reaching ZooKeeper or SQL: one line, its own exit code).

    \b
    one-owner    every bucket has exactly one owner in ZooKeeper (none listed twice, no id
                 out of range, no unreadable entry; an unowned one counts while a node is live)
    owner-state  every owner is live or suspect (gone, within its grace period)
    sql-agrees   bucket.node_key and SQL's mirrored epoch say what ZooKeeper says
    lease-owner  every lease {root}/leases/{bucket} names the bucket's owner (a live node
                 still handing the bucket over is a note)
    stuck-plan   no plan is applying while nobody holds the assignment lock

    What a cycle holding the lock is writing counts as in flight, and foreign znodes under
    nodes/ are notes, not violations.
    """
    verdict = evaluate(_read())
    if output is OutputFormat.json:
        print_json(verdict.to_json())
    else:
        _print(verdict)
    if not verdict.ok:
        raise typer.Exit(1)


def _read() -> Facts:
    # the checks report what the readers would log (corrupt entries, foreign znodes)
    with (
        _quiet("allot"),
        open_database() as db,
        open_zookeeper(db.settings, "verifying the cluster") as client,
    ):
        return read_facts(client, db.sessions, db.settings)


def _print(verdict: Verdict) -> None:
    for note in verdict.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    for violation in verdict.violations:
        console.print(
            f"[red]{violation.check}[/red]: {violation.detail}", highlight=False, soft_wrap=True
        )
    summary = (
        f"epoch {verdict.epoch}, {verdict.bucket_count} buckets, {len(verdict.live)} live and "
        f"{len(verdict.suspect)} suspect node(s)"
    )
    if verdict.ok:
        console.print(f"ok: {summary}", highlight=False)
    else:
        console.print(
            f"[red]{len(verdict.violations)} violation(s)[/red]: {summary}", highlight=False
        )


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
