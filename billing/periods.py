"""Calendar billing periods in the customer's timezone, stored as UTC ``[start, end)``.

A period runs from local midnight on the 1st of a month (or of January, for yearly plans)
to local midnight on the 1st of the next one. Both bounds are converted to UTC, so a
January period in ``Europe/Paris`` is ``[2025-12-31T23:00Z, 2026-01-31T23:00Z)``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from billing.models import BillingEntity, Customer, PlanInterval, Subscription

__all__ = [
    "billing_period",
    "describe_period",
    "period_ending_on",
    "period_starting",
    "period_workflow_id",
    "proration_ratio",
    "resolve_grace_period_days",
    "resolve_timezone",
]


def resolve_timezone(customer: Customer, entity: BillingEntity) -> str:
    """The customer's timezone, else the billing entity's, else UTC."""
    return customer.timezone or entity.timezone or "UTC"


def resolve_grace_period_days(customer: Customer, entity: BillingEntity) -> int:
    """The customer's grace period, else the billing entity's (0 is a real value)."""
    if customer.grace_period_days is not None:
        return customer.grace_period_days
    return entity.grace_period_days


def billing_period(
    timestamp: datetime, timezone: str, interval: PlanInterval
) -> tuple[datetime, datetime]:
    """The period containing ``timestamp``: local midnight to local midnight, in UTC."""
    local_day = timestamp.astimezone(ZoneInfo(timezone)).date()
    first_day = local_day.replace(day=1)
    if interval == PlanInterval.YEARLY:
        first_day = first_day.replace(month=1)
    return period_starting(first_day, timezone, interval)


def period_starting(
    start: date, timezone: str, interval: PlanInterval
) -> tuple[datetime, datetime]:
    """The period whose first local day is ``start`` (must be the 1st of a month/year)."""
    if start.day != 1 or (interval == PlanInterval.YEARLY and start.month != 1):
        unit = "year" if interval == PlanInterval.YEARLY else "month"
        raise ValueError(
            f"a {interval.value} period starts on the first day of a {unit}, not {start}"
        )
    return _utc_midnight(start, timezone), _utc_midnight(_next_start(start, interval), timezone)


def period_ending_on(
    subscription: Subscription, day: date, timezone: str, interval: PlanInterval
) -> tuple[datetime, datetime] | None:
    """The subscription's period whose last local day is ``day``, if it bills one.

    None when no period ends on ``day`` (not a month's or year's last day), or when the
    subscription starts at or after the period's end or ended at or before its start.
    """
    zone = ZoneInfo(timezone)
    start, end = billing_period(
        datetime(day.year, day.month, day.day, 12, tzinfo=zone), timezone, interval
    )
    if (end - timedelta(microseconds=1)).astimezone(zone).date() != day:
        return None
    if subscription.started_at >= end:
        return None
    if subscription.terminated_at is not None and subscription.terminated_at <= start:
        return None
    return start, end


def period_workflow_id(
    subscription_external_id: str, period_start: datetime, timezone: str = "UTC"
) -> str:
    """The period's workflow id: ``billing-period/<subscription>/<first local day>``.

    The business key of a period: one workflow per subscription and period, whoever
    starts it. The date is the period's first day in the customer's timezone (the day
    on the invoice).
    """
    local_start = period_start.astimezone(ZoneInfo(timezone))
    return f"billing-period/{subscription_external_id}/{local_start.date().isoformat()}"


def describe_period(start: datetime, end: datetime, timezone: str) -> str:
    """Human label of a period in local dates, e.g. ``2026-01-01..2026-01-31``.

    The end is shown inclusive: the last local day before the exclusive ``end``.
    """
    zone = ZoneInfo(timezone)
    first_day = start.astimezone(zone).date()
    last_day = (end - timedelta(microseconds=1)).astimezone(zone).date()
    return f"{first_day.isoformat()}..{last_day.isoformat()}"


def proration_ratio(
    subscription_started_at: datetime, period_start: datetime, period_end: datetime, timezone: str
) -> Decimal:
    """Share of the period the subscription covers, counted in whole local days (1 if before).

    A subscription started on January 15 covers 17 of January's 31 days (15..31 inclusive):
    the start day counts in full, whatever the hour. Started at or after the end: 0.
    """
    if subscription_started_at <= period_start:
        return Decimal(1)
    if subscription_started_at >= period_end:
        return Decimal(0)
    zone = ZoneInfo(timezone)
    first_day = period_start.astimezone(zone).date()
    end_day = period_end.astimezone(zone).date()  # exclusive: local midnight after the last day
    started_day = subscription_started_at.astimezone(zone).date()
    days_in_period = (end_day - first_day).days
    days_covered = (end_day - started_day).days
    return Decimal(days_covered) / Decimal(days_in_period)


def _next_start(start: date, interval: PlanInterval) -> date:
    if interval == PlanInterval.YEARLY:
        return start.replace(year=start.year + 1)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def _utc_midnight(day: date, timezone: str) -> datetime:
    local_midnight = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(timezone))
    return local_midnight.astimezone(UTC)
