"""Create the billing store: catalog, ledger, outbox, and the immutability triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-21 23:12:42.198496
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import store.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# A finalized (or closed) invoice never changes: the database refuses it even when the
# application code is bypassed. Only ``updated_at`` may still move.
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
LOCKED_CHILD_TABLES = ("fees", "adjusted_fees")


def _postgresql_triggers() -> list[str]:
    new = ", ".join(f"NEW.{column}" for column in PROTECTED_INVOICE_COLUMNS)
    old = ", ".join(f"OLD.{column}" for column in PROTECTED_INVOICE_COLUMNS)
    statements = [
        f"""
        CREATE FUNCTION billing_reject_finalized_invoice_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
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
        """,
        """
        CREATE TRIGGER invoices_immutable_after_finalization
        BEFORE UPDATE OR DELETE ON invoices
        FOR EACH ROW EXECUTE FUNCTION billing_reject_finalized_invoice_change()
        """,
        """
        CREATE FUNCTION billing_reject_finalized_fee_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            invoice_status text;
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                SELECT status INTO invoice_status FROM invoices WHERE id = OLD.invoice_id;
                IF invoice_status <> 'draft' THEN
                    RAISE EXCEPTION '% of invoice % cannot change: the invoice is %',
                        TG_TABLE_NAME, OLD.invoice_id, invoice_status
                        USING ERRCODE = 'integrity_constraint_violation';
                END IF;
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                SELECT status INTO invoice_status FROM invoices WHERE id = NEW.invoice_id;
                IF invoice_status <> 'draft' THEN
                    RAISE EXCEPTION '% of invoice % cannot change: the invoice is %',
                        TG_TABLE_NAME, NEW.invoice_id, invoice_status
                        USING ERRCODE = 'integrity_constraint_violation';
                END IF;
                RETURN NEW;
            END IF;
            RETURN OLD;
        END $$
        """,
    ]
    statements += [
        f"""
        CREATE TRIGGER {table}_immutable_after_finalization
        BEFORE INSERT OR UPDATE OR DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION billing_reject_finalized_fee_change()
        """
        for table in LOCKED_CHILD_TABLES
    ]
    return statements


def _sqlite_triggers() -> list[str]:
    changed = " OR ".join(
        f"NEW.{column} IS NOT OLD.{column}" for column in PROTECTED_INVOICE_COLUMNS
    )
    statements = [
        f"""
        CREATE TRIGGER invoices_immutable_after_finalization
        BEFORE UPDATE ON invoices
        FOR EACH ROW WHEN OLD.status <> 'draft' AND ({changed})
        BEGIN SELECT RAISE(ABORT, 'invoice is finalized or closed and cannot change'); END
        """,
        """
        CREATE TRIGGER invoices_not_deleted_after_finalization
        BEFORE DELETE ON invoices
        FOR EACH ROW WHEN OLD.status <> 'draft'
        BEGIN SELECT RAISE(ABORT, 'invoice is finalized or closed and cannot be deleted'); END
        """,
    ]
    status_of = "(SELECT status FROM invoices WHERE id = {row}.invoice_id) <> 'draft'"
    for table in LOCKED_CHILD_TABLES:
        message = f"{table} of a finalized or closed invoice cannot change"
        statements += [
            f"""
            CREATE TRIGGER {table}_insert_immutable_after_finalization
            BEFORE INSERT ON {table} FOR EACH ROW WHEN {status_of.format(row="NEW")}
            BEGIN SELECT RAISE(ABORT, '{message}'); END
            """,
            f"""
            CREATE TRIGGER {table}_update_immutable_after_finalization
            BEFORE UPDATE ON {table} FOR EACH ROW
            WHEN {status_of.format(row="OLD")} OR {status_of.format(row="NEW")}
            BEGIN SELECT RAISE(ABORT, '{message}'); END
            """,
            f"""
            CREATE TRIGGER {table}_delete_immutable_after_finalization
            BEFORE DELETE ON {table} FOR EACH ROW WHEN {status_of.format(row="OLD")}
            BEGIN SELECT RAISE(ABORT, '{message}'); END
            """,
        ]
    return statements


def _create_immutability_triggers() -> None:
    dialect = op.get_bind().dialect.name
    statements = _postgresql_triggers() if dialect == "postgresql" else _sqlite_triggers()
    for statement in statements:
        op.execute(statement)


def _drop_immutability_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("invoices", *LOCKED_CHILD_TABLES):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable_after_finalization ON {table}")
        op.execute("DROP FUNCTION IF EXISTS billing_reject_finalized_invoice_change()")
        op.execute("DROP FUNCTION IF EXISTS billing_reject_finalized_fee_change()")
        return
    # SQLite drops a table's triggers with the table.


def upgrade() -> None:
    op.create_table(
        "billable_metrics",
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("aggregation_type", sa.String(length=32), nullable=False),
        sa.Column("field_name", sa.String(length=200), nullable=True),
        sa.Column("rounding_function", sa.String(length=16), nullable=True),
        sa.Column("rounding_precision", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_billable_metrics")),
    )
    op.create_table(
        "billing_entities",
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("grace_period_days", sa.Integer(), nullable=False),
        sa.Column("tax_rate", store.types.ExactDecimal(), nullable=False),
        sa.Column("invoice_prefix", sa.String(length=20), nullable=False),
        sa.Column("finalize_zero_amount_invoice", sa.Boolean(), nullable=False),
        sa.Column("send_invoice_drafted_webhook", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_billing_entities")),
    )
    op.create_table(
        "coupons",
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("coupon_type", sa.String(length=32), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=True),
        sa.Column("percentage_rate", store.types.ExactDecimal(), nullable=True),
        sa.Column("frequency", sa.String(length=16), nullable=False),
        sa.Column("frequency_duration", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_coupons")),
    )
    op.create_table(
        "plans",
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("interval", sa.String(length=16), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("invoice_display_name", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_plans")),
    )
    op.create_table(
        "rejected_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("subscription_external_id", sa.String(length=200), nullable=False),
        sa.Column("transaction_id", sa.String(length=200), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("timestamp", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "properties",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejected_events")),
        sa.UniqueConstraint(
            "subscription_external_id",
            "transaction_id",
            name=op.f("uq_rejected_events_subscription_external_id_transaction_id"),
        ),
    )
    op.create_table(
        "rejected_inputs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=100), nullable=False),
        sa.Column("subscription_external_id", sa.String(length=200), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejected_inputs")),
        sa.UniqueConstraint("key", name=op.f("uq_rejected_inputs_key")),
    )
    with op.batch_alter_table("rejected_inputs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rejected_inputs_subscription_external_id"),
            ["subscription_external_id"],
            unique=False,
        )

    op.create_table(
        "webhook_endpoints",
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("secret", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_webhook_endpoints")),
    )
    op.create_table(
        "charges",
        sa.Column("plan_code", sa.String(length=100), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("billable_metric_code", sa.String(length=100), nullable=False),
        sa.Column("charge_model", sa.String(length=32), nullable=False),
        sa.Column(
            "properties",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("invoice_display_name", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["billable_metric_code"],
            ["billable_metrics.code"],
            name=op.f("fk_charges_billable_metric_code_billable_metrics"),
        ),
        sa.ForeignKeyConstraint(
            ["plan_code"],
            ["plans.code"],
            name=op.f("fk_charges_plan_code_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("plan_code", "code", name=op.f("pk_charges")),
    )
    op.create_table(
        "customers",
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("billing_entity_code", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("grace_period_days", sa.Integer(), nullable=True),
        sa.Column("tax_rate", store.types.ExactDecimal(), nullable=True),
        sa.Column("finalize_zero_amount_invoice", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["billing_entity_code"],
            ["billing_entities.code"],
            name=op.f("fk_customers_billing_entity_code_billing_entities"),
        ),
        sa.PrimaryKeyConstraint("external_id", name=op.f("pk_customers")),
    )
    op.create_table(
        "invoice_sequences",
        sa.Column("billing_entity_code", sa.String(length=100), nullable=False),
        sa.Column("last_number", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["billing_entity_code"],
            ["billing_entities.code"],
            name=op.f("fk_invoice_sequences_billing_entity_code_billing_entities"),
        ),
        sa.PrimaryKeyConstraint("billing_entity_code", name=op.f("pk_invoice_sequences")),
    )
    op.create_table(
        "applied_coupons",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("coupon_code", sa.String(length=100), nullable=False),
        sa.Column("customer_external_id", sa.String(length=200), nullable=False),
        sa.Column("applied_order", sa.Integer(), nullable=False),
        sa.Column("coupon_type", sa.String(length=32), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=True),
        sa.Column("percentage_rate", store.types.ExactDecimal(), nullable=True),
        sa.Column("frequency", sa.String(length=16), nullable=False),
        sa.Column("frequency_duration_remaining", sa.Integer(), nullable=True),
        sa.Column("amount_cents_remaining", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["coupon_code"], ["coupons.code"], name=op.f("fk_applied_coupons_coupon_code_coupons")
        ),
        sa.ForeignKeyConstraint(
            ["customer_external_id"],
            ["customers.external_id"],
            name=op.f("fk_applied_coupons_customer_external_id_customers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_applied_coupons")),
    )
    with op.batch_alter_table("applied_coupons", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_applied_coupons_customer_external_id"),
            ["customer_external_id", "status", "applied_order"],
            unique=False,
        )

    op.create_table(
        "subscriptions",
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("customer_external_id", sa.String(length=200), nullable=False),
        sa.Column("plan_code", sa.String(length=100), nullable=False),
        sa.Column("started_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("terminated_at", store.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_external_id"],
            ["customers.external_id"],
            name=op.f("fk_subscriptions_customer_external_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["plan_code"], ["plans.code"], name=op.f("fk_subscriptions_plan_code_plans")
        ),
        sa.PrimaryKeyConstraint("external_id", name=op.f("pk_subscriptions")),
    )
    op.create_table(
        "wallets",
        sa.Column("customer_external_id", sa.String(length=200), nullable=False),
        sa.Column("balance_cents", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_external_id"],
            ["customers.external_id"],
            name=op.f("fk_wallets_customer_external_id_customers"),
        ),
        sa.PrimaryKeyConstraint("customer_external_id", name=op.f("pk_wallets")),
    )
    op.create_table(
        "invoices",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("number", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("billing_entity_code", sa.String(length=100), nullable=False),
        sa.Column("customer_external_id", sa.String(length=200), nullable=False),
        sa.Column("subscription_external_id", sa.String(length=200), nullable=False),
        sa.Column("period_start", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("period_end", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("issuing_date", store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("fees_amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("coupons_amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("taxes_amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("sub_total_excluding_taxes_amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("sub_total_including_taxes_amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("prepaid_credit_amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("total_amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("tax_rate", store.types.ExactDecimal(), nullable=False),
        sa.Column("created_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["billing_entity_code"],
            ["billing_entities.code"],
            name=op.f("fk_invoices_billing_entity_code_billing_entities"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_external_id"],
            ["customers.external_id"],
            name=op.f("fk_invoices_customer_external_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["subscription_external_id"],
            ["subscriptions.external_id"],
            name=op.f("fk_invoices_subscription_external_id_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint(
            "subscription_external_id",
            "period_start",
            name=op.f("uq_invoices_subscription_external_id_period_start"),
        ),
    )
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_invoices_customer_external_id", ["customer_external_id"], unique=False
        )
        batch_op.create_index(
            "uq_invoices_billing_entity_code_number",
            ["billing_entity_code", "number"],
            unique=True,
            postgresql_where=sa.text("status = 'finalized'"),
            sqlite_where=sa.text("status = 'finalized'"),
        )

    op.create_table(
        "usage_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("subscription_external_id", sa.String(length=200), nullable=False),
        sa.Column("transaction_id", sa.String(length=200), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("timestamp", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "properties",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("number_value", store.types.ExactDecimal(), nullable=True),
        sa.Column("text_value", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscription_external_id"],
            ["subscriptions.external_id"],
            name=op.f("fk_usage_events_subscription_external_id_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_events")),
        sa.UniqueConstraint(
            "subscription_external_id",
            "transaction_id",
            name=op.f("uq_usage_events_subscription_external_id_transaction_id"),
        ),
    )
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_usage_events_subscription_code_timestamp",
            ["subscription_external_id", "code", "timestamp"],
            unique=False,
            postgresql_include=["number_value"],
        )

    op.create_table(
        "adjusted_fees",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("invoice_id", sa.String(length=36), nullable=False),
        sa.Column("charge_code", sa.String(length=100), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("units", store.types.ExactDecimal(), nullable=True),
        sa.Column("unit_amount", store.types.ExactDecimal(), nullable=True),
        sa.Column("display_name", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_adjusted_fees_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adjusted_fees")),
        sa.UniqueConstraint(
            "invoice_id", "charge_code", name=op.f("uq_adjusted_fees_invoice_id_charge_code")
        ),
    )
    op.create_table(
        "coupon_consumptions",
        sa.Column("invoice_id", sa.String(length=36), nullable=False),
        sa.Column("applied_coupon_id", sa.String(length=200), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["applied_coupon_id"],
            ["applied_coupons.id"],
            name=op.f("fk_coupon_consumptions_applied_coupon_id_applied_coupons"),
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_coupon_consumptions_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint(
            "invoice_id", "applied_coupon_id", name=op.f("pk_coupon_consumptions")
        ),
    )
    op.create_table(
        "fees",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("invoice_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=False),
        sa.Column("units", store.types.ExactDecimal(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("precise_amount", store.types.ExactDecimal(), nullable=False),
        sa.Column("unit_amount", store.types.ExactDecimal(), nullable=False),
        sa.Column("events_count", sa.BigInteger(), nullable=False),
        sa.Column("adjusted", sa.Boolean(), nullable=False),
        sa.Column("coupons_amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("taxes_amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("precise_taxes_amount", store.types.ExactDecimal(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_fees_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fees")),
        sa.UniqueConstraint("invoice_id", "code", name=op.f("uq_fees_invoice_id_code")),
    )
    op.create_table(
        "wallet_transactions",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("customer_external_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("invoice_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_external_id"],
            ["wallets.customer_external_id"],
            name=op.f("fk_wallet_transactions_customer_external_id_wallets"),
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_wallet_transactions_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_transactions")),
        sa.UniqueConstraint("invoice_id", name=op.f("uq_wallet_transactions_invoice_id")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("invoice_id", sa.String(length=36), nullable=False),
        sa.Column("webhook_type", sa.String(length=64), nullable=False),
        sa.Column("endpoint_code", sa.String(length=100), nullable=False),
        sa.Column("endpoint_url", sa.String(length=2000), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_http_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_code"],
            ["webhook_endpoints.code"],
            name=op.f("fk_webhook_deliveries_endpoint_code_webhook_endpoints"),
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_webhook_deliveries_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint(
            "invoice_id",
            "webhook_type",
            "endpoint_code",
            name=op.f("uq_webhook_deliveries_invoice_id_webhook_type_endpoint_code"),
        ),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_webhook_deliveries_status"), ["status"], unique=False)

    _create_immutability_triggers()


def downgrade() -> None:
    _drop_immutability_triggers()
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_status"))

    op.drop_table("webhook_deliveries")
    op.drop_table("wallet_transactions")
    op.drop_table("fees")
    op.drop_table("coupon_consumptions")
    op.drop_table("adjusted_fees")
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_usage_events_subscription_code_timestamp", postgresql_include=["number_value"]
        )

    op.drop_table("usage_events")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_invoices_billing_entity_code_number",
            postgresql_where=sa.text("status = 'finalized'"),
            sqlite_where=sa.text("status = 'finalized'"),
        )
        batch_op.drop_index("ix_invoices_customer_external_id")

    op.drop_table("invoices")
    op.drop_table("wallets")
    op.drop_table("subscriptions")
    with op.batch_alter_table("applied_coupons", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_applied_coupons_customer_external_id"))

    op.drop_table("applied_coupons")
    op.drop_table("invoice_sequences")
    op.drop_table("customers")
    op.drop_table("charges")
    op.drop_table("webhook_endpoints")
    with op.batch_alter_table("rejected_inputs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rejected_inputs_subscription_external_id"))

    op.drop_table("rejected_inputs")
    op.drop_table("rejected_events")
    op.drop_table("plans")
    op.drop_table("coupons")
    op.drop_table("billing_entities")
    op.drop_table("billable_metrics")
