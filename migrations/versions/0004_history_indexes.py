"""Bounded history: the indexes that pruning and ``allot work runs`` read at 100 M rows.

``table_task_run`` gets ``(started_at, attempt_id)`` (pruning oldest first, and the unfiltered
list newest first) and one ``(column, started_at)`` index per filter of ``allot work runs``
(node, status, task; the table filter already has ``(table_id, started_at)``), so each filter
reads the newest rows of its index and stops after ``--limit``. ``plan`` has had its
``created_at`` and ``status`` indexes since 0001.

Building an index locks the table against writes while it builds (minutes on a table of many
millions of rows): upgrade while table work is quiet, or create the indexes beforehand with
``CREATE INDEX CONCURRENTLY`` under these names on PostgreSQL (the upgrade then only checks
they are there, ``if_not_exists``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUN_INDEXES = (
    ("started_at", "attempt_id"),
    ("node_key", "started_at"),
    ("status", "started_at"),
    ("task_name", "started_at"),
)


def _name(columns: tuple[str, ...]) -> str:
    return "ix_table_task_run_" + "_".join(columns)


def upgrade() -> None:
    for columns in RUN_INDEXES:
        op.create_index(_name(columns), "table_task_run", list(columns), if_not_exists=True)


def downgrade() -> None:
    for columns in reversed(RUN_INDEXES):
        op.drop_index(_name(columns), table_name="table_task_run")
