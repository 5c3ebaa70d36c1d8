"""The initial schema: tables, buckets, nodes, plans, plan moves and table_assignment.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)

TABLE_ASSIGNMENT_SQL = """
CREATE VIEW table_assignment AS
SELECT t.table_id, t.catalog_name, t.db_name, t.table_name, t.bucket_id, b.node_key, b.epoch
FROM table_identifier t
JOIN bucket b ON b.bucket_id = t.bucket_id
"""


def upgrade() -> None:
    op.create_table(
        "bucket",
        sa.Column("bucket_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("node_key", sa.String(128), nullable=True),
        sa.Column("epoch", sa.Integer(), server_default="0", nullable=False),
        sa.Column("table_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("table_count >= 0", name=op.f("ck_bucket_table_count_non_negative")),
        sa.PrimaryKeyConstraint("bucket_id", name=op.f("pk_bucket")),
    )
    op.create_index(op.f("ix_bucket_node_key"), "bucket", ["node_key"])

    op.create_table(
        "table_identifier",
        sa.Column("table_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("catalog_name", sa.String(128), nullable=False),
        sa.Column("db_name", sa.String(128), nullable=False),
        sa.Column("table_name", sa.String(128), nullable=False),
        sa.Column("bucket_id", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["bucket_id"],
            ["bucket.bucket_id"],
            name=op.f("fk_table_identifier_bucket_id_bucket"),
        ),
        sa.PrimaryKeyConstraint("table_id", name=op.f("pk_table_identifier")),
        sa.UniqueConstraint(
            "catalog_name",
            "db_name",
            "table_name",
            name=op.f("uq_table_identifier_catalog_name_db_name_table_name"),
        ),
    )
    op.create_index(op.f("ix_table_identifier_bucket_id"), "table_identifier", ["bucket_id"])

    op.create_table(
        "node",
        sa.Column("node_key", sa.String(128), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("first_seen", TIMESTAMP, nullable=False),
        sa.Column("last_seen", TIMESTAMP, nullable=False),
        sa.Column("departed_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint(
            "state IN ('live', 'suspect', 'offline')", name=op.f("ck_node_state_known")
        ),
        sa.CheckConstraint("weight > 0", name=op.f("ck_node_weight_positive")),
        sa.PrimaryKeyConstraint("node_key", name=op.f("pk_node")),
    )

    op.create_table(
        "plan",
        sa.Column("plan_id", sa.String(64), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("strategy", sa.String(32), nullable=False),
        sa.Column("base_epoch", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=True),
        sa.Column("max_moves", sa.Integer(), nullable=True),
        sa.Column("moves", sa.Integer(), nullable=False),
        sa.Column("min_moves", sa.Integer(), nullable=False),
        sa.Column("spread_before", sa.Float(), nullable=False),
        sa.Column("spread_after", sa.Float(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("applied_at", TIMESTAMP, nullable=True),
        sa.Column("error", sa.String(2000), nullable=True),
        sa.CheckConstraint(
            "status IN ('generated', 'applying', 'applied', 'rejected', 'failed')",
            name=op.f("ck_plan_status_known"),
        ),
        sa.PrimaryKeyConstraint("plan_id", name=op.f("pk_plan")),
    )
    op.create_index(op.f("ix_plan_status"), "plan", ["status"])
    op.create_index(op.f("ix_plan_created_at"), "plan", ["created_at"])

    op.create_table(
        "plan_move",
        sa.Column("plan_id", sa.String(64), nullable=False),
        sa.Column("bucket_id", sa.Integer(), nullable=False),
        sa.Column("from_node", sa.String(128), nullable=True),
        sa.Column("to_node", sa.String(128), nullable=False),
        sa.ForeignKeyConstraint(
            ["bucket_id"], ["bucket.bucket_id"], name=op.f("fk_plan_move_bucket_id_bucket")
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["plan.plan_id"],
            name=op.f("fk_plan_move_plan_id_plan"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("plan_id", "bucket_id", name=op.f("pk_plan_move")),
    )

    op.execute(TABLE_ASSIGNMENT_SQL)


def downgrade() -> None:
    op.execute("DROP VIEW table_assignment")
    op.drop_table("plan_move")
    op.drop_index(op.f("ix_plan_created_at"), table_name="plan")
    op.drop_index(op.f("ix_plan_status"), table_name="plan")
    op.drop_table("plan")
    op.drop_table("node")
    op.drop_index(op.f("ix_table_identifier_bucket_id"), table_name="table_identifier")
    op.drop_table("table_identifier")
    op.drop_index(op.f("ix_bucket_node_key"), table_name="bucket")
    op.drop_table("bucket")
