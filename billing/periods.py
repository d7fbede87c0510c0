"""Calendar billing periods in the customer's timezone, stored as UTC ``[start, end)``."""

from __future__ import annotations

from datetime import date, datetime

from billing.models import BillingEntity, Customer, PlanInterval

__all__ = ["billing_period", "describe_period", "period_starting", "proration_ratio", "resolve_timezone"]


def resolve_timezone(customer: Customer, entity: BillingEntity) -> str:
    """The customer's timezone, else the billing entity's, else UTC."""
    raise NotImplementedError


def billing_period(timestamp: datetime, timezone: str, interval: PlanInterval) -> tuple[datetime, datetime]:
    """The period containing ``timestamp``: local midnight to local midnight, in UTC."""
    raise NotImplementedError


def period_starting(start: date, timezone: str, interval: PlanInterval) -> tuple[datetime, datetime]:
    """The period whose first local day is ``start`` (must be the 1st of a month/year)."""
    raise NotImplementedError


def describe_period(start: datetime, end: datetime, timezone: str) -> str:
    """Human label of a period in local dates, e.g. ``2026-01-01..2026-01-31``."""
    raise NotImplementedError


def proration_ratio(
    subscription_started_at: datetime, period_start: datetime, period_end: datetime, timezone: str
) -> "Decimal":  # noqa: F821 - filled in by the implementation
    """Share of the period the subscription covers, counted in whole local days (1 if before)."""
    raise NotImplementedError
