"""``allot verify``: the invariants, checked against the live cluster."""

from __future__ import annotations

import typer

from allot.cli._common import FormatOption, OutputFormat, console, print_json
from allot.cli._context import open_database, open_zookeeper
from allot.verify import Facts, read_facts, violations


def _read() -> Facts:
    with open_database() as db, open_zookeeper(db.settings, "verifying") as client:
        return read_facts(client, db.sessions, db.settings)


def verify(output: FormatOption = OutputFormat.table) -> None:
    """Check the invariants on the live cluster: every bucket has one owner in ZooKeeper, owners
    are live or in their grace period, SQL agrees with ZooKeeper, leases name the owners, no
    plan is stuck applying. Exits 1 listing every violation, 0 when all hold."""
    facts = _read()
    found = violations(facts)
    seen = facts.seen
    epoch = seen.snapshot.version.epoch
    notes = [f"ignored {name}: {why}" for name, why in sorted(seen.members.ignored().items())]
    if output is OutputFormat.json:
        print_json(
            {
                "ok": not found,
                "epoch": epoch,
                "buckets": facts.bucket_count,
                "live": sorted(seen.classes.live),
                "suspect": sorted(seen.classes.suspect),
                "violations": [{"check": v.check, "detail": v.detail} for v in found],
                "notes": notes,
            }
        )
    else:
        for note in notes:
            console.print(f"note: {note}", highlight=False)
        for violation in found:
            console.print(f"[red]{violation.check}[/red]: {violation.detail}", highlight=False)
        if not found:
            console.print(
                f"ok: epoch {epoch}, {facts.bucket_count} buckets, {len(seen.classes.live)} live "
                f"and {len(seen.classes.suspect)} suspect node(s); every invariant holds",
                highlight=False,
            )
    if found:
        raise typer.Exit(1)
