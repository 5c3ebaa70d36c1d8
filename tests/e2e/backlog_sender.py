"""``python -m tests.e2e.backlog_sender TABLE COUNT SECONDS PRIORITY OUT``: send COUNT
``e2e.backlog.send`` runs to TABLE at once, each working SECONDS, with PRIORITY (0: none,
kombu's default list), through allot's app (configured from the environment); write their
task ids to OUT once all are sent."""

from __future__ import annotations

import sys

import tasks  # noqa: F401  (allot's Celery app: table tasks route through it)
from tests.e2e.backlog_tasks import send


def main(argv: list[str]) -> None:
    table, count, seconds, priority, out = argv
    options = {"priority": int(priority)} if int(priority) else {}
    ids = [
        send.apply_async((table,), {"seconds": float(seconds)}, **options).id
        for _ in range(int(count))
    ]
    with open(out, "w", encoding="utf-8") as file:
        file.write("\n".join(ids) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
