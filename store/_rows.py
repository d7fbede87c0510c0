"""Shared plumbing of the repositories: sessions, rows -> domain models, upserts.

Private to ``store``: rows never leave the package, only the domain models built here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, Insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from billing.errors import NotFound
from billing.models import (
    AggregationType,
    AppliedCoupon,
    BillableMetric,
    BillingEntity,
    Charge,
    ChargeModel,
    CouponFrequency,
    CouponType,
    Customer,
    FinalizeZeroAmount,
    Plan,
    PlanInterval,
    RoundingFunction,
    Subscription,
)
from billing.periods import resolve_timezone
from store.schema import (
    AppliedCouponRow,
    Base,
    BillableMetricRow,
    BillingEntityRow,
    ChargeRow,
    CustomerRow,
    PlanRow,
    SubscriptionRow,
)

__all__ = ["BillingContext", "dialect_insert", "load_context", "transaction", "utcnow"]


class BillingContext(BaseModel):
    """Everything the domain core needs to bill one subscription."""

    model_config = ConfigDict(frozen=True)

    subscription: Subscription
    customer: Customer
    billing_entity: BillingEntity
    plan: Plan
    metrics: dict[str, BillableMetric]
    timezone: str
    grace_period_days: int
    currency: str


def utcnow() -> datetime:
    """Bookkeeping timestamps (``created_at``); never used for billing decisions."""
    return datetime.now(UTC)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One unit of work: commits when the block ends, rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


def dialect_insert(session: Session, table: type[Base]) -> Any:
    """``INSERT`` with ``on_conflict_do_nothing/do_update`` for the session's dialect."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def upsert(
    session: Session,
    table: type[Base],
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
) -> None:
    """Insert ``rows`` or update the existing ones with the same ``keys``."""
    if not rows:
        return
    statement = dialect_insert(session, table)
    updated = {name: statement.excluded[name] for name in rows[0] if name not in keys}
    if updated:
        final: Insert = statement.on_conflict_do_update(index_elements=list(keys), set_=updated)
    else:
        final = statement.on_conflict_do_nothing(index_elements=list(keys))
    session.execute(final, list(rows))


# --------------------------------------------------------------------------- rows -> models


def entity_model(row: BillingEntityRow) -> BillingEntity:
    return BillingEntity(
        code=row.code,
        name=row.name,
        currency=row.currency,
        timezone=row.timezone,
        grace_period_days=row.grace_period_days,
        tax_rate=row.tax_rate,
        invoice_prefix=row.invoice_prefix,
        finalize_zero_amount_invoice=row.finalize_zero_amount_invoice,
        send_invoice_drafted_webhook=row.send_invoice_drafted_webhook,
    )


def customer_model(row: CustomerRow) -> Customer:
    return Customer(
        external_id=row.external_id,
        billing_entity_code=row.billing_entity_code,
        name=row.name,
        email=row.email,
        timezone=row.timezone,
        grace_period_days=row.grace_period_days,
        tax_rate=row.tax_rate,
        finalize_zero_amount_invoice=FinalizeZeroAmount(row.finalize_zero_amount_invoice),
    )


def metric_model(row: BillableMetricRow) -> BillableMetric:
    return BillableMetric(
        code=row.code,
        name=row.name,
        aggregation_type=AggregationType(row.aggregation_type),
        field_name=row.field_name,
        rounding_function=RoundingFunction(row.rounding_function)
        if row.rounding_function
        else None,
        rounding_precision=row.rounding_precision,
    )


def charge_model(row: ChargeRow) -> Charge:
    return Charge(
        code=row.code,
        billable_metric_code=row.billable_metric_code,
        charge_model=ChargeModel(row.charge_model),
        properties=dict(row.properties),
        invoice_display_name=row.invoice_display_name,
    )


def plan_model(row: PlanRow, charges: Sequence[ChargeRow]) -> Plan:
    return Plan(
        code=row.code,
        name=row.name,
        interval=PlanInterval(row.interval),
        amount_cents=row.amount_cents,
        invoice_display_name=row.invoice_display_name,
        charges=tuple(charge_model(charge) for charge in charges),
    )


def subscription_model(row: SubscriptionRow) -> Subscription:
    return Subscription(
        external_id=row.external_id,
        customer_external_id=row.customer_external_id,
        plan_code=row.plan_code,
        started_at=row.started_at,
        terminated_at=row.terminated_at,
    )


def applied_coupon_model(row: AppliedCouponRow) -> AppliedCoupon:
    return AppliedCoupon(
        id=row.id,
        coupon_code=row.coupon_code,
        customer_external_id=row.customer_external_id,
        coupon_type=CouponType(row.coupon_type),
        amount_cents=row.amount_cents,
        percentage_rate=row.percentage_rate,
        frequency=CouponFrequency(row.frequency),
        frequency_duration_remaining=row.frequency_duration_remaining,
        amount_cents_remaining=row.amount_cents_remaining,
        status="active" if row.status == "active" else "terminated",
    )


def load_context(session: Session, subscription_external_id: str) -> BillingContext:
    """The billing context of a subscription, read inside the caller's transaction.

    Two statements (every store activity loads it, so round trips count): the
    subscription with its customer, billing entity and plan; then the plan's charges
    with their billable metrics.
    """
    found = session.execute(
        select(SubscriptionRow, CustomerRow, BillingEntityRow, PlanRow)
        .join(CustomerRow, CustomerRow.external_id == SubscriptionRow.customer_external_id)
        .join(BillingEntityRow, BillingEntityRow.code == CustomerRow.billing_entity_code)
        .join(PlanRow, PlanRow.code == SubscriptionRow.plan_code)
        .where(SubscriptionRow.external_id == subscription_external_id)
    ).one_or_none()
    if found is None:
        raise NotFound(f"subscription {subscription_external_id!r} does not exist")
    subscription, customer_row, entity_row, plan_row = found
    charged = session.execute(
        select(ChargeRow, BillableMetricRow)
        .join(BillableMetricRow, BillableMetricRow.code == ChargeRow.billable_metric_code)
        .where(ChargeRow.plan_code == plan_row.code)
        .order_by(ChargeRow.position)
    ).all()
    plan = plan_model(plan_row, [charge for charge, _ in charged])
    metrics = {metric.code: metric for _, metric in charged}.values()
    customer = customer_model(customer_row)
    entity = entity_model(entity_row)
    grace = customer.grace_period_days
    return BillingContext(
        subscription=subscription_model(subscription),
        customer=customer,
        billing_entity=entity,
        plan=plan,
        metrics={row.code: metric_model(row) for row in metrics},
        timezone=resolve_timezone(customer, entity),
        grace_period_days=entity.grace_period_days if grace is None else grace,
        currency=entity.currency,
    )
