"""What a billing period's workflow reads once about its subscription."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine

from billing.models import BillingContext
from billing.periods import describe_period
from store.unit_of_work import UnitOfWork

__all__ = ["PeriodSettings", "load_period_settings", "period_settings"]


class PeriodSettings(BaseModel):
    """What the workflow needs to know about its customer, read once per period."""

    model_config = ConfigDict(frozen=True)

    customer_external_id: str
    billing_entity_code: str
    currency: str
    timezone: str
    grace_period_days: int
    period_label: str
    charge_codes: list[str] = []


def load_period_settings(
    engine: Engine, subscription_external_id: str, period_start: datetime, period_end: datetime
) -> PeriodSettings:
    """The customer, currency, timezone, grace period and charges of a period."""
    with UnitOfWork(engine) as uow:
        context = uow.catalog.billing_context(subscription_external_id)
    return period_settings(context, period_start, period_end)


def period_settings(
    context: BillingContext, period_start: datetime, period_end: datetime
) -> PeriodSettings:
    """The settings of a period, from its subscription's billing context."""
    return PeriodSettings(
        customer_external_id=context.customer.external_id,
        billing_entity_code=context.billing_entity.code,
        currency=context.currency,
        timezone=context.timezone,
        grace_period_days=context.grace_period_days,
        period_label=describe_period(period_start, period_end, context.timezone),
        charge_codes=context.charge_codes,
    )
