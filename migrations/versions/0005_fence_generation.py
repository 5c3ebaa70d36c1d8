"""The ZooKeeper generation of the SQL fences: a rebuilt ZooKeeper can take over.

``bucket_lease.generation`` (table work) and ``mirror_state.generation`` (the assignment
cycle's mirror), existing fences starting at 0, and ``fence_generation``, the counter new
ZooKeeper generations are taken from (one row, ``zookeeper``, starting at 0). A fence is the
pair ``(generation, token)`` from here on (:mod:`allot.generation`).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("bucket_lease") as batch:
        batch.add_column(
            sa.Column("generation", sa.BigInteger(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("mirror_state") as batch:
        batch.add_column(
            sa.Column("generation", sa.BigInteger(), server_default="0", nullable=False)
        )
    fence_generation = op.create_table(
        "fence_generation",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("generation", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("allocated_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_fence_generation")),
    )
    op.bulk_insert(fence_generation, [{"name": "zookeeper", "generation": 0}])


def downgrade() -> None:
    op.drop_table("fence_generation")
    with op.batch_alter_table("mirror_state") as batch:
        batch.drop_column("generation")
    with op.batch_alter_table("bucket_lease") as batch:
        batch.drop_column("generation")
