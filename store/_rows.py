"""Shared plumbing of the repositories: rows -> domain models, upserts, dialects.

Private to ``store``: rows never leave the package, only the domain models built here.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Insert, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from billing.models import (
    AggregationType,
    AppliedCoupon,
    BillableMetric,
    BillingEntity,
    Charge,
    ChargeModel,
    Coupon,
    CouponFrequency,
    CouponType,
    Customer,
    FinalizeZeroAmount,
    Plan,
    PlanInterval,
    RoundingFunction,
    Subscription,
)
from store.schema import Base

__all__ = [
    "dialect_insert",
    "dialect_insert_for",
    "dialect_name",
    "insert_or_skip",
    "insert_or_skip_for",
    "table_of",
    "upsert",
    "utcnow",
]


def utcnow() -> datetime:
    """Bookkeeping timestamps (``created_at``); never used for billing decisions."""
    return datetime.now(UTC)


def table_of(row_class: type[Base]) -> Table:
    """The Core table of a mapped row class, for statements that build no ORM instances."""
    return Base.metadata.tables[row_class.__tablename__]


def dialect_name(session: Session) -> str:
    return session.get_bind().dialect.name


def dialect_insert(session: Session, table: type[Base]) -> Any:
    """``INSERT`` with ``on_conflict_do_nothing/do_update`` for the session's dialect.

    Over the Core table, not the mapped class: the session then executes it as a plain
    (executemany) insert, without the ORM bulk insert machinery; the values are the
    columns' (every mapped attribute is named as its column) and their types apply.
    """
    return dialect_insert_for(dialect_name(session), table)


def dialect_insert_for(dialect: str, table: type[Base]) -> Any:
    """:func:`dialect_insert` for a dialect by name (statements built once per dialect)."""
    if dialect == "postgresql":
        return postgresql.insert(table_of(table))
    return sqlite.insert(table_of(table))


def insert_or_skip(session: Session, table: type[Base], keys: tuple[str, ...]) -> Any:
    """``INSERT ... ON CONFLICT (keys) DO NOTHING`` for the session's dialect."""
    return insert_or_skip_for(dialect_name(session), table, keys)


@functools.cache
def insert_or_skip_for(dialect: str, table: type[Base], keys: tuple[str, ...]) -> Any:
    """:func:`insert_or_skip` built once per dialect: the hot inserts (timeline entries,
    outbox rows, drafts) neither rebuild the statement nor compute its cache key again."""
    return dialect_insert_for(dialect, table).on_conflict_do_nothing(index_elements=list(keys))


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
# Built from Core rows' mappings (``row._mapping``, or a dict of a joined row's slice):
# reads select table columns, so no ORM instance (identity map, instance state) is made.

Values = Mapping[Any, Any]  # RowMapping keys are typed Any


def entity_model(row: Values) -> BillingEntity:
    return BillingEntity(
        code=row["code"],
        name=row["name"],
        currency=row["currency"],
        timezone=row["timezone"],
        grace_period_days=row["grace_period_days"],
        tax_rate=row["tax_rate"],
        invoice_prefix=row["invoice_prefix"],
        finalize_zero_amount_invoice=row["finalize_zero_amount_invoice"],
        send_invoice_drafted_webhook=row["send_invoice_drafted_webhook"],
        approval=row["approval"],
    )


def customer_model(row: Values) -> Customer:
    return Customer(
        external_id=row["external_id"],
        billing_entity_code=row["billing_entity_code"],
        name=row["name"],
        email=row["email"],
        timezone=row["timezone"],
        grace_period_days=row["grace_period_days"],
        tax_rate=row["tax_rate"],
        finalize_zero_amount_invoice=FinalizeZeroAmount(row["finalize_zero_amount_invoice"]),
        approval=row["approval"],
    )


def metric_model(row: Values) -> BillableMetric:
    return BillableMetric(
        code=row["code"],
        name=row["name"],
        aggregation_type=AggregationType(row["aggregation_type"]),
        field_name=row["field_name"],
        rounding_function=RoundingFunction(row["rounding_function"])
        if row["rounding_function"]
        else None,
        rounding_precision=row["rounding_precision"],
    )


def charge_model(row: Values) -> Charge:
    return Charge(
        code=row["code"],
        billable_metric_code=row["billable_metric_code"],
        charge_model=ChargeModel(row["charge_model"]),
        properties=dict(row["properties"]),
        invoice_display_name=row["invoice_display_name"],
    )


def plan_model(row: Values, charges: Sequence[Values]) -> Plan:
    return Plan(
        code=row["code"],
        name=row["name"],
        interval=PlanInterval(row["interval"]),
        amount_cents=row["amount_cents"],
        invoice_display_name=row["invoice_display_name"],
        charges=tuple(charge_model(charge) for charge in charges),
    )


def subscription_model(row: Values) -> Subscription:
    return Subscription(
        external_id=row["external_id"],
        customer_external_id=row["customer_external_id"],
        plan_code=row["plan_code"],
        started_at=row["started_at"],
        terminated_at=row["terminated_at"],
    )


def applied_coupon_model(row: Values) -> AppliedCoupon:
    return AppliedCoupon(
        id=row["id"],
        coupon_code=row["coupon_code"],
        customer_external_id=row["customer_external_id"],
        coupon_type=CouponType(row["coupon_type"]),
        amount_cents=row["amount_cents"],
        percentage_rate=row["percentage_rate"],
        frequency=CouponFrequency(row["frequency"]),
        frequency_duration_remaining=row["frequency_duration_remaining"],
        amount_cents_remaining=row["amount_cents_remaining"],
        status="active" if row["status"] == "active" else "terminated",
    )


def coupon_model(row: Values) -> Coupon:
    return Coupon(
        code=row["code"],
        name=row["name"],
        coupon_type=CouponType(row["coupon_type"]),
        amount_cents=row["amount_cents"],
        percentage_rate=row["percentage_rate"],
        frequency=CouponFrequency(row["frequency"]),
        frequency_duration=row["frequency_duration"],
    )
