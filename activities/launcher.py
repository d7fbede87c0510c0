"""The activity behind scheduled launches: which periods end on a date.

It reads the catalog only; the workflow starts the periods (as abandoned children with
the standard workflow id), so every launch is visible in the launcher's history.
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import sqlalchemy
from pydantic import BaseModel, ConfigDict
from temporalio import activity

from billing.models import InvoiceStatus
from billing.periods import describe_period, period_ending_on, period_workflow_id
from services.catalog import get_billing_context, list_subscriptions
from services.invoices import find_invoice

__all__ = ["LauncherActivities", "PeriodToLaunch", "PeriodsEndingRequest"]


class PeriodsEndingRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    period_end_date: date


class PeriodToLaunch(BaseModel):
    model_config = ConfigDict(frozen=True)

    subscription_external_id: str
    period_start: datetime
    period_end: datetime
    timezone: str
    customer_external_id: str = ""
    label: str
    local_start: date  # the period's first local day: the workflow id's date

    @property
    def workflow_id(self) -> str:
        """The period's business key (:func:`billing.periods.period_workflow_id`)."""
        return period_workflow_id(self.subscription_external_id, self.period_start, self.timezone)


class LauncherActivities:
    def __init__(self, engine: sqlalchemy.Engine) -> None:
        self.engine = engine

    @activity.defn
    def list_periods_ending(self, request: PeriodsEndingRequest) -> list[PeriodToLaunch]:
        """Periods whose last local day is the date, not yet finalized or closed."""
        day = request.period_end_date
        periods: list[PeriodToLaunch] = []
        for subscription in list_subscriptions(self.engine):
            context = get_billing_context(self.engine, subscription.external_id)
            bounds = period_ending_on(subscription, day, context.timezone, context.plan.interval)
            if bounds is None:
                continue
            start, end = bounds
            invoice = find_invoice(self.engine, subscription.external_id, start)
            if invoice is not None and invoice.status in (
                InvoiceStatus.FINALIZED,
                InvoiceStatus.CLOSED,
            ):
                continue
            periods.append(
                PeriodToLaunch(
                    subscription_external_id=subscription.external_id,
                    customer_external_id=context.customer.external_id,
                    period_start=start,
                    period_end=end,
                    timezone=context.timezone,
                    label=describe_period(start, end, context.timezone),
                    local_start=start.astimezone(ZoneInfo(context.timezone)).date(),
                )
            )
        return periods
