"""Tables of the billing store (SQLAlchemy 2 typed mappings).

The schema is created by the Alembic migrations in ``store/migrations``; these classes
describe it for queries. Rows never leave the ``store`` package: repositories turn them
into domain models (``billing.models``).

Conventions: money is integer minor units (``*_cents``) plus :class:`ExactDecimal` for
unrounded values; timestamps are :class:`UTCDateTime`; business keys are unique
constraints so every write can be idempotent (``INSERT ... ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from store.types import ExactDecimal, UTCDateTime

__all__ = [
    "AdjustedFeeRow",
    "AppliedCouponRow",
    "Base",
    "BillableMetricRow",
    "BillingEntityRow",
    "ChargeRow",
    "CouponConsumptionRow",
    "CouponRow",
    "CustomerRow",
    "FeeRow",
    "InvoiceRow",
    "InvoiceSequenceRow",
    "InvoiceTimelineRow",
    "PlanRow",
    "RejectedEventRow",
    "RejectedInputRow",
    "SubscriptionRow",
    "UsageEventRow",
    "UsageReceiptRow",
    "WalletRow",
    "WalletTransactionRow",
    "WebhookDeliveryRow",
    "WebhookEndpointRow",
]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Autoincrementing 64-bit ids: SQLite only autoincrements an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), Decimal: ExactDecimal()}


# --------------------------------------------------------------------------- catalog


class BillingEntityRow(Base):
    __tablename__ = "billing_entities"

    code: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    currency: Mapped[str] = mapped_column(String(3))
    timezone: Mapped[str] = mapped_column(String(64))
    grace_period_days: Mapped[int]
    tax_rate: Mapped[Decimal]
    invoice_prefix: Mapped[str] = mapped_column(String(20))
    finalize_zero_amount_invoice: Mapped[bool] = mapped_column(Boolean)
    send_invoice_drafted_webhook: Mapped[bool] = mapped_column(Boolean)
    approval: Mapped[dict[str, Any] | None] = mapped_column(Json)  # billing.approval.ApprovalRules


class CustomerRow(Base):
    __tablename__ = "customers"

    external_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    billing_entity_code: Mapped[str] = mapped_column(ForeignKey("billing_entities.code"))
    name: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255))
    timezone: Mapped[str | None] = mapped_column(String(64))
    grace_period_days: Mapped[int | None]
    tax_rate: Mapped[Decimal | None]
    finalize_zero_amount_invoice: Mapped[str] = mapped_column(String(16))
    approval: Mapped[dict[str, Any] | None] = mapped_column(Json)  # replaces the entity's


class BillableMetricRow(Base):
    __tablename__ = "billable_metrics"

    code: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    aggregation_type: Mapped[str] = mapped_column(String(32))
    field_name: Mapped[str | None] = mapped_column(String(200))
    rounding_function: Mapped[str | None] = mapped_column(String(16))
    rounding_precision: Mapped[int | None]


class PlanRow(Base):
    __tablename__ = "plans"

    code: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    interval: Mapped[str] = mapped_column(String(16))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    invoice_display_name: Mapped[str | None] = mapped_column(String(255))


class ChargeRow(Base):
    __tablename__ = "charges"

    plan_code: Mapped[str] = mapped_column(
        ForeignKey("plans.code", ondelete="CASCADE"), primary_key=True
    )
    code: Mapped[str] = mapped_column(String(100), primary_key=True)
    position: Mapped[int]
    billable_metric_code: Mapped[str] = mapped_column(ForeignKey("billable_metrics.code"))
    charge_model: Mapped[str] = mapped_column(String(32))
    properties: Mapped[dict[str, Any]] = mapped_column(Json)
    invoice_display_name: Mapped[str | None] = mapped_column(String(255))


class SubscriptionRow(Base):
    __tablename__ = "subscriptions"

    external_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    customer_external_id: Mapped[str] = mapped_column(ForeignKey("customers.external_id"))
    plan_code: Mapped[str] = mapped_column(ForeignKey("plans.code"))
    started_at: Mapped[datetime]
    terminated_at: Mapped[datetime | None]


class CouponRow(Base):
    __tablename__ = "coupons"

    code: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    coupon_type: Mapped[str] = mapped_column(String(32))
    amount_cents: Mapped[int | None] = mapped_column(BigInteger)
    percentage_rate: Mapped[Decimal | None]
    frequency: Mapped[str] = mapped_column(String(16))
    frequency_duration: Mapped[int | None]


class AppliedCouponRow(Base):
    __tablename__ = "applied_coupons"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    coupon_code: Mapped[str] = mapped_column(ForeignKey("coupons.code"))
    customer_external_id: Mapped[str] = mapped_column(ForeignKey("customers.external_id"))
    applied_order: Mapped[int]  # coupons are consumed in the order they were applied
    coupon_type: Mapped[str] = mapped_column(String(32))
    amount_cents: Mapped[int | None] = mapped_column(BigInteger)
    percentage_rate: Mapped[Decimal | None]
    frequency: Mapped[str] = mapped_column(String(16))
    frequency_duration_remaining: Mapped[int | None]
    amount_cents_remaining: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]

    __table_args__ = (Index(None, "customer_external_id", "status", "applied_order"),)


class WalletRow(Base):
    __tablename__ = "wallets"

    customer_external_id: Mapped[str] = mapped_column(
        ForeignKey("customers.external_id"), primary_key=True
    )
    balance_cents: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class WalletTransactionRow(Base):
    """A top-up or an invoice's consumption; the id is the caller's idempotency key."""

    __tablename__ = "wallet_transactions"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    customer_external_id: Mapped[str] = mapped_column(ForeignKey("wallets.customer_external_id"))
    kind: Mapped[str] = mapped_column(String(16))  # top_up | invoice
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    invoice_id: Mapped[str | None] = mapped_column(ForeignKey("invoices.id"), unique=True)
    created_at: Mapped[datetime]


class WebhookEndpointRow(Base):
    __tablename__ = "webhook_endpoints"

    code: Mapped[str] = mapped_column(String(100), primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(500))


class InvoiceSequenceRow(Base):
    """The last invoice number used by a billing entity (gapless: updated in the same
    transaction that finalizes the invoice)."""

    __tablename__ = "invoice_sequences"

    billing_entity_code: Mapped[str] = mapped_column(
        ForeignKey("billing_entities.code"), primary_key=True
    )
    last_number: Mapped[int] = mapped_column(BigInteger)


# --------------------------------------------------------------------------- ledger


class UsageEventRow(Base):
    """An accepted event with its metric value extracted, so SQL can aggregate it."""

    __tablename__ = "usage_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscription_external_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.external_id"))
    transaction_id: Mapped[str] = mapped_column(String(200))
    code: Mapped[str] = mapped_column(String(100))
    timestamp: Mapped[datetime]
    properties: Mapped[dict[str, Any]] = mapped_column(Json)
    number_value: Mapped[Decimal | None]  # numeric aggregations (sum, max, latest, ...)
    text_value: Mapped[str | None] = mapped_column(String(500))  # unique_count

    __table_args__ = (
        UniqueConstraint("subscription_external_id", "transaction_id"),
        Index(
            "ix_usage_events_subscription_code_timestamp",
            "subscription_external_id",
            "code",
            "timestamp",
            postgresql_include=["number_value"],
        ),
    )


class UsageReceiptRow(Base):
    """What one recording step did with its batch, so that the step run again (a retried
    or re-executed activity) answers the same receipt instead of "all duplicates".
    Kept until its period is finalized or closed."""

    __tablename__ = "usage_receipts"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    accepted: Mapped[int]
    duplicates: Mapped[int]
    rejected: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    created_at: Mapped[datetime]
    # The period the step belongs to: its finalization or closing deletes the receipt.
    # Null on rows written before migration 0005 (deleted once they are a week old).
    subscription_external_id: Mapped[str | None] = mapped_column(String(200))
    period_start: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_usage_receipts_period", "subscription_external_id", "period_start"),
    )


class RejectedEventRow(Base):
    __tablename__ = "rejected_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscription_external_id: Mapped[str] = mapped_column(String(200))
    transaction_id: Mapped[str] = mapped_column(String(200))
    code: Mapped[str] = mapped_column(String(100))
    timestamp: Mapped[datetime]
    properties: Mapped[dict[str, Any]] = mapped_column(Json)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("subscription_external_id", "transaction_id"),)


class RejectedInputRow(Base):
    """A signal or request a workflow refused (bad fee edit, late usage...), for operators."""

    __tablename__ = "rejected_inputs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    source: Mapped[str] = mapped_column(String(300))  # a workflow id: up to 226
    kind: Mapped[str] = mapped_column(String(100))
    subscription_external_id: Mapped[str | None] = mapped_column(String(200), index=True)
    payload: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class InvoiceRow(Base):
    __tablename__ = "invoices"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    number: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    billing_entity_code: Mapped[str] = mapped_column(ForeignKey("billing_entities.code"))
    customer_external_id: Mapped[str] = mapped_column(ForeignKey("customers.external_id"))
    subscription_external_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.external_id"))
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    issuing_date: Mapped[datetime | None]
    fees_amount_cents: Mapped[int] = mapped_column(BigInteger)
    coupons_amount_cents: Mapped[int] = mapped_column(BigInteger)
    taxes_amount_cents: Mapped[int] = mapped_column(BigInteger)
    sub_total_excluding_taxes_amount_cents: Mapped[int] = mapped_column(BigInteger)
    sub_total_including_taxes_amount_cents: Mapped[int] = mapped_column(BigInteger)
    prepaid_credit_amount_cents: Mapped[int] = mapped_column(BigInteger)
    total_amount_cents: Mapped[int] = mapped_column(BigInteger)
    tax_rate: Mapped[Decimal]
    # The grace period: from ``drafted_at`` (the workflow's clock) to
    # ``expected_finalization_at``; ``grace_period_fixed``: set by the period's own start
    # input (tests, demos), so catalog changes do not move it.
    drafted_at: Mapped[datetime | None]
    expected_finalization_at: Mapped[datetime | None]
    grace_period_fixed: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    approval: Mapped[dict[str, Any] | None] = mapped_column(
        Json
    )  # billing.approval.InvoiceApproval
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("subscription_external_id", "period_start"),
        Index("ix_invoices_customer_external_id", "customer_external_id"),
        Index(
            "uq_invoices_billing_entity_code_number",
            "billing_entity_code",
            "number",
            unique=True,
            postgresql_where=text("status = 'finalized'"),
            sqlite_where=text("status = 'finalized'"),
        ),
    )


class InvoiceTimelineRow(Base):
    """One change of an invoice (billing.timeline), written with the change itself.

    No foreign key to ``invoices``: refusals before the draft exists are kept under the
    period's invoice id. ``key`` makes a retried step record its change once.
    """

    __tablename__ = "invoice_timeline"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    invoice_id: Mapped[str] = mapped_column(String(36))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(Text)
    total_amount_cents: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_invoice_timeline_invoice_id_id", "invoice_id", "id"),)


class FeeRow(Base):
    __tablename__ = "fees"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"))
    position: Mapped[int]
    code: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    display_name: Mapped[str] = mapped_column(String(255))
    units: Mapped[Decimal]
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    precise_amount: Mapped[Decimal]
    unit_amount: Mapped[Decimal]
    events_count: Mapped[int] = mapped_column(BigInteger)
    adjusted: Mapped[bool] = mapped_column(Boolean)
    coupons_amount_cents: Mapped[int] = mapped_column(BigInteger)
    taxes_amount_cents: Mapped[int] = mapped_column(BigInteger)
    precise_taxes_amount: Mapped[Decimal]

    __table_args__ = (UniqueConstraint("invoice_id", "code"),)


class AdjustedFeeRow(Base):
    """An operator's edit of a draft fee, kept apart so refreshes never lose it."""

    __tablename__ = "adjusted_fees"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"))
    charge_code: Mapped[str] = mapped_column(String(100))
    mode: Mapped[str] = mapped_column(String(16))
    units: Mapped[Decimal | None]
    unit_amount: Mapped[Decimal | None]
    display_name: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (UniqueConstraint("invoice_id", "charge_code"),)


class CouponConsumptionRow(Base):
    """What one finalized invoice took from one applied coupon."""

    __tablename__ = "coupon_consumptions"

    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"), primary_key=True)
    applied_coupon_id: Mapped[str] = mapped_column(
        ForeignKey("applied_coupons.id"), primary_key=True
    )
    amount_cents: Mapped[int] = mapped_column(BigInteger)


class WebhookDeliveryRow(Base):
    """Outbox row written with the finalization, then the log of its delivery."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"))
    webhook_type: Mapped[str] = mapped_column(String(64))
    endpoint_code: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.code"))
    endpoint_url: Mapped[str] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int]
    last_http_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("invoice_id", "webhook_type", "endpoint_code"),)
