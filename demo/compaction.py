"""A simulated compaction, every 30 s, of every registered table, on the table's owner (two
slow tables take 45 s and skip every other period).

``make run`` loads this module on every node (``ALLOT_TASK_MODULES=demo.compaction``). Each
run works 20-200 ms, then commits, fenced, the table's last compaction into
``demo_compaction`` (one row per table, created on first use). Which node last processed a
table, and when::

    SELECT node_key, compacted_at, files_merged FROM demo_compaction
    JOIN table_identifier USING (table_id)
    WHERE catalog_name = 'hive' AND db_name = 'sales' AND table_name = 'orders';
"""

from __future__ import annotations

import random
import time

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    insert,
)

from allot.work import TableContext, table_task
from models.base import utcnow

metadata = MetaData()
demo_compaction = Table(
    "demo_compaction",
    metadata,
    Column("table_id", Integer, primary_key=True),
    Column("node_key", String(128), nullable=False),
    Column("token", BigInteger, nullable=False),
    Column("files_merged", Integer, nullable=False),
    Column("compacted_at", DateTime(timezone=True), nullable=False),
)
_created = False


SLOW_TABLES = frozenset({"hive.sales.orders_archive", "hive.web.clicks_archive"})
"""Tables whose compaction takes 45 s, longer than the period: they skip every other period,
while their bucket-mates keep theirs (``allot work runs --table ...``, Flower)."""
SLOW_SECONDS = 45.0


@table_task(name="demo.compact", every=30)
def compact(ctx: TableContext, min_ms: int = 20, max_ms: int = 200) -> dict[str, object]:
    """Pretend to merge a table's small files for ``min_ms``-``max_ms`` ms (45 s on
    :data:`SLOW_TABLES`), then record it."""
    global _created
    slow = str(ctx.table) in SLOW_TABLES
    time.sleep(SLOW_SECONDS if slow else random.uniform(min_ms, max_ms) / 1000)
    files = random.randint(2, 40)
    with ctx.commit() as session:
        if not _created:
            metadata.create_all(session.connection())
            _created = True
        session.execute(delete(demo_compaction).where(demo_compaction.c.table_id == ctx.table_id))
        session.execute(
            insert(demo_compaction).values(
                table_id=ctx.table_id,
                node_key=ctx.node_key,
                token=ctx.token,
                files_merged=files,
                compacted_at=utcnow(),
            )
        )
    return {"table": ctx.table, "files_merged": files}
