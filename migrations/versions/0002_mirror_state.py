"""The mirror's fence: which assignment-lock holder last wrote SQL, and the highest epoch.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    mirror_state = op.create_table(
        "mirror_state",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("holder_token", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("epoch", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_mirror_state")),
    )
    # the epoch SQL already mirrors, so it never goes backwards from here on
    bucket = sa.table("bucket", sa.column("epoch", sa.Integer()))
    epoch = sa.select(sa.func.coalesce(sa.func.max(bucket.c.epoch), 0))
    op.execute(
        sa.insert(mirror_state).from_select(
            ["name", "holder_token", "epoch"],
            sa.select(sa.literal("assignment"), sa.literal(0), epoch.scalar_subquery()),
        )
    )


def downgrade() -> None:
    op.drop_table("mirror_state")
