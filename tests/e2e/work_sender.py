"""``python -m tests.e2e.work_sender TABLES COUNT RATE SECONDS OUT [COUNTDOWN]``: send COUNT
``e2e.record`` calls over the comma-separated TABLES, RATE per second, each working SECONDS
(and due COUNTDOWN seconds after it is sent), through allot's app (configured from the
environment); append each task id to OUT as it is sent."""

from __future__ import annotations

import sys
import time

import tasks  # noqa: F401  (allot's Celery app: table tasks route through it)
from tests.e2e.work_tasks import record


def main(argv: list[str]) -> None:
    tables, count, rate, seconds, out = (
        argv[0].split(","),
        int(argv[1]),
        float(argv[2]),
        float(argv[3]),
        argv[4],
    )
    countdown = float(argv[5]) if len(argv) > 5 else None
    with open(out, "a", encoding="utf-8") as ids:
        for index in range(count):
            table = tables[index % len(tables)]
            result = record.apply_async((table,), {"seconds": seconds}, countdown=countdown)
            ids.write(result.id + "\n")
            ids.flush()
            time.sleep(1 / rate)


if __name__ == "__main__":
    main(sys.argv[1:])
