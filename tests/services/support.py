"""Helpers of the store tests: periods of the example catalog and event builders."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import yaml
from sqlalchemy import Engine

from billing.models import PlanInterval, UsageEvent
from billing.periods import period_starting
from services.invoices import DraftOutcome, draft_invoice
from tests.fixtures.database import CATALOG_FILE

JANUARY = date(2026, 1, 1)
FEBRUARY = date(2026, 2, 1)


def january(timezone: str) -> tuple[datetime, datetime]:
    """January 2026 in ``timezone``, as the UTC half-open interval the store expects."""
    return period_starting(JANUARY, timezone, PlanInterval.MONTHLY)


def draft_at_once(
    engine: Engine, subscription: str, period: tuple[datetime, datetime], at: datetime
) -> DraftOutcome:
    """The period-end step of a grace period of zero, asked to finalize when due."""
    return draft_invoice(
        engine, subscription, *period, drafted_at=at, grace_period_seconds=0, finalize_when_due=True
    )


def february(timezone: str) -> tuple[datetime, datetime]:
    return period_starting(FEBRUARY, timezone, PlanInterval.MONTHLY)


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


def example_catalog() -> dict[str, Any]:
    """``examples/catalog.yaml`` as a fresh dict, to change and load again."""
    loaded: dict[str, Any] = yaml.safe_load(CATALOG_FILE.read_text(encoding="utf-8"))
    return loaded


def entry(catalog: dict[str, Any], section: str, key: str, value: str) -> dict[str, Any]:
    """The item of ``catalog[section]`` whose ``key`` is ``value`` (to change it)."""
    return next(item for item in catalog[section] if item[key] == value)
