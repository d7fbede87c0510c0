"""Operator control of the grace period: approval rules and holds, the invoice's grace
period deadline, and the invoice timeline.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 05:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import store.types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 0001's protected columns and the new ones: a finalized or closed invoice keeps its
# approval and its (cleared) deadline as they were.
PROTECTED_INVOICE_COLUMNS = (
    "number",
    "status",
    "currency",
    "billing_entity_code",
    "customer_external_id",
    "subscription_external_id",
    "period_start",
    "period_end",
    "issuing_date",
    "fees_amount_cents",
    "coupons_amount_cents",
    "taxes_amount_cents",
    "sub_total_excluding_taxes_amount_cents",
    "sub_total_including_taxes_amount_cents",
    "prepaid_credit_amount_cents",
    "total_amount_cents",
    "tax_rate",
)
NEW_PROTECTED_COLUMNS = (
    "drafted_at",
    "expected_finalization_at",
    "grace_period_fixed",
    "approval",
)


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _invoice_trigger(columns: Sequence[str]) -> list[str]:
    if op.get_bind().dialect.name == "postgresql":
        new = ", ".join(f"NEW.{c}" for c in columns)
        old = ", ".join(f"OLD.{c}" for c in columns)
        return [
            f"""
            CREATE OR REPLACE FUNCTION billing_reject_finalized_invoice_change()
            RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'DELETE' THEN
                    IF OLD.status <> 'draft' THEN
                        RAISE EXCEPTION 'invoice % is % and cannot be deleted', OLD.id, OLD.status
                            USING ERRCODE = 'integrity_constraint_violation';
                    END IF;
                    RETURN OLD;
                END IF;
                IF OLD.status <> 'draft' AND ROW({new}) IS DISTINCT FROM ROW({old}) THEN
                    RAISE EXCEPTION 'invoice % is % and cannot change', OLD.id, OLD.status
                        USING ERRCODE = 'integrity_constraint_violation';
                END IF;
                RETURN NEW;
            END $$
            """
        ]
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in columns)
    return [
        "DROP TRIGGER IF EXISTS invoices_immutable_after_finalization",
        f"""
        CREATE TRIGGER invoices_immutable_after_finalization
        BEFORE UPDATE ON invoices
        FOR EACH ROW WHEN OLD.status <> 'draft' AND ({changed})
        BEGIN SELECT RAISE(ABORT, 'invoice is finalized or closed and cannot change'); END
        """,
    ]


def upgrade() -> None:
    op.add_column("billing_entities", sa.Column("approval", _json(), nullable=True))
    op.add_column("customers", sa.Column("approval", _json(), nullable=True))
    # Plain ADD COLUMN (no batch copy of the table: SQLite would lose its triggers).
    op.add_column(
        "invoices", sa.Column("drafted_at", store.types.UTCDateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "invoices",
        sa.Column(
            "expected_finalization_at", store.types.UTCDateTime(timezone=True), nullable=True
        ),
    )
    op.add_column(
        "invoices",
        sa.Column("grace_period_fixed", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("invoices", sa.Column("approval", _json(), nullable=True))
    op.create_table(
        "invoice_timeline",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("invoice_id", sa.String(length=36), nullable=False),
        sa.Column("at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("total_amount_cents", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_timeline")),
        sa.UniqueConstraint("key", name=op.f("uq_invoice_timeline_key")),
    )
    op.create_index("ix_invoice_timeline_invoice_id_id", "invoice_timeline", ["invoice_id", "id"])
    for statement in _invoice_trigger(PROTECTED_INVOICE_COLUMNS + NEW_PROTECTED_COLUMNS):
        op.execute(statement)


def downgrade() -> None:
    for statement in _invoice_trigger(PROTECTED_INVOICE_COLUMNS):
        op.execute(statement)
    op.drop_index("ix_invoice_timeline_invoice_id_id", table_name="invoice_timeline")
    op.drop_table("invoice_timeline")
    for column in ("approval", "grace_period_fixed", "expected_finalization_at", "drafted_at"):
        op.drop_column("invoices", column)  # SQLite >= 3.35 drops in place
    op.drop_column("customers", "approval")
    op.drop_column("billing_entities", "approval")
