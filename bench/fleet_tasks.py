"""The tasks of bench/fleet.py (workers import this through ALLOT_TASK_MODULES).

``FLEET_MODE=allot``: ``fleet.periodic``, a periodic table task every ``FLEET_PERIOD``
seconds; ``plain`` (any mode): ``fleet.plain``, the same body as a plain Celery task a
beat-like sender sends per table per period. Tables named in ``FLEET_SLOW`` sleep 1.5 periods;
every run records ``(kind, table, period, ended)`` in ``fleet_run``.
"""

from __future__ import annotations

import os
import time

from celery import shared_task
from sqlalchemy import Column, Engine, Float, Integer, MetaData, String, Table, insert

from allot.work import TableContext, table_task
from models.engine import make_engine

EVERY = float(os.environ.get("FLEET_PERIOD", "30"))
SLOW = frozenset(filter(None, os.environ.get("FLEET_SLOW", "").split(",")))

metadata = MetaData()
fleet_run = Table(
    "fleet_run",
    metadata,
    Column("kind", String(8)),
    Column("table_name", String(255)),
    Column("period", Integer),
    Column("ended", Float),
)
_engine: list[Engine] = []


def work(table: str) -> None:
    """The cheap body: nothing, or 1.5 periods on a slow table."""
    if table in SLOW:
        time.sleep(1.5 * EVERY)


if os.environ.get("FLEET_MODE", "allot") == "allot":

    @table_task(name="fleet.periodic", every=EVERY)
    def periodic(ctx: TableContext) -> None:
        """The periodic table task: the body, then its row in the fenced commit."""
        work(str(ctx.table))
        with ctx.commit() as session:
            session.execute(
                insert(fleet_run).values(
                    kind="allot",
                    table_name=str(ctx.table),
                    period=int(ctx.run_id.rsplit(":", 1)[1]),
                    ended=time.time(),
                )
            )


@shared_task(name="fleet.plain")
def plain(table: str, period: int) -> None:
    """The plain Celery task: the same body, then its row, on any worker."""
    work(table)
    if not _engine:
        _engine.append(make_engine(os.environ["ALLOT_DATABASE_URL"]))
    with _engine[0].begin() as connection:
        connection.execute(
            insert(fleet_run).values(
                kind="plain", table_name=table, period=period, ended=time.time()
            )
        )
