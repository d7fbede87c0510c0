"""A refused input's source is its period's workflow id: ``billing-period/``, a
subscription id of up to 200 characters, ``/`` and the period's first day, so up to 226
characters; the column held 200.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 14:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rejected_inputs", schema=None) as batch_op:
        batch_op.alter_column(
            "source", existing_type=sa.String(length=200), type_=sa.String(length=300)
        )


def downgrade() -> None:
    with op.batch_alter_table("rejected_inputs", schema=None) as batch_op:
        batch_op.alter_column(
            "source", existing_type=sa.String(length=300), type_=sa.String(length=200)
        )
