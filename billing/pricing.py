"""Aggregations of billable metrics and the charge models (public API, DESIGN.md section 6)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from billing.models import AggregationType, BillableMetric, Charge, ChargeModel

__all__ = ["aggregate", "charge_amount", "round_units", "validate_charge"]


def aggregate(
    aggregation_type: AggregationType | str,
    events: Iterable[tuple[datetime, Any]],
    period_start: datetime,
    period_end: datetime,
) -> Decimal:
    """Aggregate ``(timestamp, value)`` pairs of one period."""
    raise NotImplementedError


def round_units(metric: BillableMetric, value: Decimal) -> Decimal:
    """Apply the metric's rounding (round/ceil/floor with precision) to its aggregate."""
    raise NotImplementedError


def charge_amount(
    model: ChargeModel | str,
    properties: Mapping[str, Any],
    units: Decimal | int | str,
    event_values: Sequence[Decimal | int | str] = (),
) -> Decimal:
    """Unrounded amount in currency units for ``units`` priced by ``model``."""
    raise NotImplementedError


def validate_charge(charge: Charge, metric: BillableMetric) -> None:
    """Raise ``InvalidChargeProperties`` when the charge cannot price the metric."""
    raise NotImplementedError
