"""The receipt of each usage recording step, under the step's idempotency key: a step
run again (its workflow task lost after the batch was stored) answers what the first run
did instead of counting the batch's own events as duplicates.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 17:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import store.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_receipts",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column(
            "rejected",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_usage_receipts")),
    )


def downgrade() -> None:
    op.drop_table("usage_receipts")
