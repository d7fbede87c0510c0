"""Fees of one billing period: the plan fee and one fee per charge, with adjustments."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from billing.models import AdjustedFee, BillableMetric, Charge, ChargeUsage, Fee, Plan, Subscription

__all__ = ["charge_fee", "compute_fees", "plan_fee"]


def plan_fee(
    plan: Plan, subscription: Subscription, period_start: datetime, period_end: datetime,
    currency: str, timezone: str,
) -> Fee | None:
    """The plan fee, prorated by days when the subscription started inside the period."""
    raise NotImplementedError


def charge_fee(
    charge: Charge, metric: BillableMetric, usage: ChargeUsage, currency: str,
    adjustment: AdjustedFee | None = None,
) -> Fee | None:
    """The fee of one charge; ``None`` for 0 units and 0 amount unless adjusted."""
    raise NotImplementedError


def compute_fees(
    plan: Plan, metrics: Mapping[str, BillableMetric], subscription: Subscription,
    period_start: datetime, period_end: datetime, currency: str, timezone: str,
    usage: Mapping[str, ChargeUsage], adjustments: Mapping[str, AdjustedFee],
) -> tuple[Fee, ...]:
    """All fees of a draft: plan fee first, then charges in plan order."""
    raise NotImplementedError
