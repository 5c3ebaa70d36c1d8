"""Table work: the per-bucket commit fence and the history of table-task runs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
COMMITTED = sa.text("status = 'committed'")


def upgrade() -> None:
    op.create_table(
        "bucket_lease",
        sa.Column("bucket_id", sa.Integer(), nullable=False),
        sa.Column("node_key", sa.String(128), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("taken_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["bucket_id"], ["bucket.bucket_id"], name=op.f("fk_bucket_lease_bucket_id_bucket")
        ),
        sa.PrimaryKeyConstraint("bucket_id", name=op.f("pk_bucket_lease")),
    )
    op.create_table(
        "table_task_run",
        sa.Column("attempt_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(255), nullable=False),
        sa.Column("task_name", sa.String(255), nullable=False),
        sa.Column("table_id", sa.Integer(), nullable=False),
        sa.Column("bucket_id", sa.Integer(), nullable=False),
        sa.Column("node_key", sa.String(128), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error", sa.String(2000), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'committed', 'fenced', 'failed')",
            name=op.f("ck_table_task_run_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["bucket_id"], ["bucket.bucket_id"], name=op.f("fk_table_task_run_bucket_id_bucket")
        ),
        sa.ForeignKeyConstraint(
            ["table_id"],
            ["table_identifier.table_id"],
            name=op.f("fk_table_task_run_table_id_table_identifier"),
            ondelete="CASCADE",  # dropping a table drops its run history
        ),
        sa.PrimaryKeyConstraint("attempt_id", name=op.f("pk_table_task_run")),
    )
    op.create_index(op.f("ix_table_task_run_run_id"), "table_task_run", ["run_id"])
    op.create_index(
        op.f("ix_table_task_run_table_id_started_at"), "table_task_run", ["table_id", "started_at"]
    )
    op.create_index(
        op.f("ix_table_task_run_bucket_id_started_at"),
        "table_task_run",
        ["bucket_id", "started_at"],
    )
    op.create_index(
        "uq_table_task_run_committed",
        "table_task_run",
        ["run_id"],
        unique=True,
        sqlite_where=COMMITTED,
        postgresql_where=COMMITTED,
    )


def downgrade() -> None:
    op.drop_table("table_task_run")
    op.drop_table("bucket_lease")
