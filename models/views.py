"""The SQL views: plain-SQL answers for operators.

``table_assignment`` answers "which node owns this table"::

    SELECT node_key, bucket_id FROM table_assignment
    WHERE catalog_name = 'hive' AND db_name = 'sales' AND table_name = 'orders';

The view is created by the migrations (``0001_initial_schema``); :data:`table_assignment`
describes its columns for queries and is not part of ``Base.metadata``, so ``create_all`` never
makes it a table.
"""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, String, Table

table_assignment = Table(
    "table_assignment",
    MetaData(),
    Column("table_id", Integer, primary_key=True),
    Column("catalog_name", String),
    Column("db_name", String),
    Column("table_name", String),
    Column("bucket_id", Integer),
    Column("node_key", String),
    Column("epoch", Integer),
)
