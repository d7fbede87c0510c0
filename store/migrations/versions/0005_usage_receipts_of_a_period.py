"""Each usage receipt names the period it belongs to (subscription and period start), so
that the period's finalization or closing deletes its receipts: after that the period's
workflow refuses usage and runs no recording step again.

Rows written before this revision (or by a worker of the previous release during the
rollout) have no period; finalizations delete those once they are a week old.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 19:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage_receipts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subscription_external_id", sa.String(200), nullable=True))
        batch_op.add_column(
            sa.Column("period_start", store.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_usage_receipts_period", ["subscription_external_id", "period_start"]
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_receipts", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_receipts_period")
        batch_op.drop_column("period_start")
        batch_op.drop_column("subscription_external_id")
