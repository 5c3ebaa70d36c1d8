"""``python -m tests.e2e.chain_sender OUT SPEC``: send workflows of table tasks through
allot's app (configured from the environment) and append one JSON line per workflow to OUT
(``{"label", "a", "b"}``: the task ids of its two steps).

SPEC is JSON: ``{"pairs": [[table_a, table_b], ...], "first": "e2e.record", "options": {...}}``.
Workflow ``i`` is ``A | B``: ``first`` (default ``e2e.record``) on ``table_a``, linked to
``e2e.chain.done("i:a")``, then ``e2e.record`` on ``table_b`` linked to ``e2e.chain.done("i:b")``.
``options`` (``countdown``, ``priority``, ``expires`` as seconds from now, ``queue``) apply to
A's message only (a ``queue`` overrides A's route: it is sent to that queue whatever its
table's bucket).
"""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any

from celery import chain

from tasks import app  # allot's Celery app: table tasks route through it
from tests.e2e.chain_tasks import done
from tests.e2e.work_tasks import record


def main(out: str, spec: dict[str, Any]) -> None:
    options = dict(spec.get("options", {}))
    if "expires" in options:
        options["expires"] = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
            seconds=options["expires"]
        )
    first = app.tasks[spec.get("first", record.name)]
    with open(out, "a", encoding="utf-8") as lines:
        for index, (table_a, table_b) in enumerate(spec["pairs"]):
            step_a = first.si(table_a)
            step_a.link(done.si(f"{index}:a"))
            step_b = record.si(table_b)
            step_b.link(done.si(f"{index}:b"))
            result = chain(step_a, step_b).apply_async(**options)
            sent = {"label": str(index), "a": result.parent.id, "b": result.id}
            lines.write(json.dumps(sent) + "\n")
            lines.flush()


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
