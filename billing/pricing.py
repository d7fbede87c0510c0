"""Pricing core, the public pricing API (docs/architecture.md).

``aggregate`` turns a period's events into units; ``round_units`` applies the metric's
rounding; ``charge_amount`` prices units with a charge model; ``validate_charge`` checks
a charge against its model and metric before it enters the catalog.

>>> from datetime import datetime, UTC
>>> jan, feb = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
>>> units = aggregate("count", [(jan, None), (jan, None), (jan, None)], jan, feb)
>>> tiers = [
...     {"from_value": 0, "to_value": 2, "per_unit_amount": "1", "flat_amount": "0"},
...     {"from_value": 3, "to_value": None, "per_unit_amount": "0.5", "flat_amount": "0"},
... ]
>>> charge_amount("graduated", {"graduated_ranges": tiers}, units)
Decimal('2.5')
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from billing.aggregations import aggregate
from billing.charge_models import COMPATIBLE_AGGREGATIONS, charge_amount, validate_properties
from billing.errors import InvalidChargeProperties
from billing.models import BillableMetric, Charge, RoundingFunction

__all__ = ["aggregate", "charge_amount", "round_units", "validate_charge"]

_ROUNDING_MODES = {
    RoundingFunction.ROUND: ROUND_HALF_UP,
    RoundingFunction.CEIL: ROUND_CEILING,
    RoundingFunction.FLOOR: ROUND_FLOOR,
}


def round_units(metric: BillableMetric, value: Decimal) -> Decimal:
    """Apply the metric's rounding (round/ceil/floor with precision) to its aggregate.

    ``round`` is half-up. The precision is a number of decimal places (default 0); a
    negative precision rounds to tens (-1), hundreds (-2), and so on.

    >>> metric = BillableMetric(code="gb", aggregation_type="sum", field_name="gb",
    ...                         rounding_function="round", rounding_precision=-2)
    >>> round_units(metric, Decimal("1250"))
    Decimal('1300')
    """
    if metric.rounding_function is None:
        return value
    precision = metric.rounding_precision or 0
    rounded = value.quantize(
        Decimal(1).scaleb(-precision), rounding=_ROUNDING_MODES[metric.rounding_function]
    )
    # Show 1300 rather than 1.3E+3 for negative precisions.
    return rounded.quantize(Decimal(1)) if precision < 0 else rounded


def validate_charge(charge: Charge, metric: BillableMetric) -> None:
    """Raise ``InvalidChargeProperties`` when the charge cannot price the metric.

    Checks that the charge is for this metric, that its model accepts the metric's
    aggregation (see ``billing.charge_models.COMPATIBLE_AGGREGATIONS``: percentage models
    need ``sum``, the others take any aggregation), and its properties.
    """
    prefix = f"charge {charge.code!r}"
    if charge.billable_metric_code != metric.code:
        raise InvalidChargeProperties(
            f"{prefix}: prices metric {charge.billable_metric_code!r}, not {metric.code!r}"
        )
    allowed = COMPATIBLE_AGGREGATIONS[charge.charge_model]
    if metric.aggregation_type not in allowed:
        names = ", ".join(sorted(aggregation.value for aggregation in allowed))
        raise InvalidChargeProperties(
            f"{prefix}: the {charge.charge_model.value} model cannot price a "
            f"{metric.aggregation_type.value} aggregation (metric {metric.code!r}); "
            f"it needs: {names}"
        )
    try:
        validate_properties(charge.charge_model, charge.properties)
    except InvalidChargeProperties as error:
        raise InvalidChargeProperties(f"{prefix}: properties.{error}") from None
