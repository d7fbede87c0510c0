"""Helpers of the store tests: periods of the example catalog and event builders."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from billing.models import PlanInterval, UsageEvent
from billing.periods import period_starting

JANUARY = date(2026, 1, 1)


def january(timezone: str) -> tuple[datetime, datetime]:
    """January 2026 in ``timezone``, as the UTC half-open interval the store expects."""
    return period_starting(JANUARY, timezone, PlanInterval.MONTHLY)


def event(
    subscription: str,
    transaction_id: str,
    code: str,
    at: datetime | str,
    **properties: Any,
) -> UsageEvent:
    timestamp = at if isinstance(at, datetime) else datetime.fromisoformat(at).astimezone(UTC)
    return UsageEvent(
        transaction_id=transaction_id,
        external_subscription_id=subscription,
        code=code,
        timestamp=timestamp,
        properties=properties,
    )
