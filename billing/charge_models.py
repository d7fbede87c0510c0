"""Charge models: how many currency units a charge costs for a period's usage.

Each model is one function below, written as the rule reads (docs/architecture.md, business rules).
Properties use Lago's JSON shapes; amounts are decimal strings (numbers are accepted too).
Every function returns an *unrounded* ``Decimal`` in currency units: rounding to cents
happens once per fee, in :func:`billing.money.to_cents`.

Two levels of checking, one parser:

- :func:`charge_amount` reads the properties it needs and refuses values it cannot price
  (unknown model, missing or non-decimal or negative amounts, ``package_size`` < 1);
- :func:`validate_properties` additionally checks the shape of tiers (start at 0, no
  overlap, no gap, open-ended last tier) and cross-field rules (min <= max). The catalog
  loader calls it through :func:`billing.pricing.validate_charge`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

from billing.errors import InvalidChargeProperties
from billing.models import AggregationType, ChargeModel

__all__ = ["COMPATIBLE_AGGREGATIONS", "charge_amount", "validate_properties"]

_HUNDRED = Decimal(100)
_ZERO = Decimal(0)

# Which metric aggregations each model can price (close to Lago). Every aggregation is a
# number of units, so the unit-priced models accept all of them. The percentage models
# take a percentage of *amounts* carried by events, which only a ``sum`` provides (a
# percentage of a count or of a maximum means nothing).
COMPATIBLE_AGGREGATIONS: Mapping[ChargeModel, frozenset[AggregationType]] = {
    ChargeModel.STANDARD: frozenset(AggregationType),
    ChargeModel.PACKAGE: frozenset(AggregationType),
    ChargeModel.GRADUATED: frozenset(AggregationType),
    ChargeModel.VOLUME: frozenset(AggregationType),
    ChargeModel.PERCENTAGE: frozenset({AggregationType.SUM}),
    ChargeModel.GRADUATED_PERCENTAGE: frozenset({AggregationType.SUM}),
}


def charge_amount(
    model: ChargeModel | str,
    properties: Mapping[str, Any],
    units: Decimal | int | str,
    event_values: Sequence[Decimal | int | str] = (),
) -> Decimal:
    """Unrounded amount in currency units for ``units`` priced by ``model``.

    Negative units count as 0 and the amount is never negative. ``event_values`` are the
    per-event values in timestamp order; only ``percentage`` uses them.

    >>> charge_amount("package", {"amount": "5", "package_size": 10, "free_units": 0}, 21)
    Decimal('15')
    """
    kind = _charge_model(model)
    count = max(_number(units, "units"), _ZERO)
    values = tuple(_number(value, "event value") for value in event_values)
    return max(_PRICERS[kind](properties, count, values), _ZERO)


def validate_properties(model: ChargeModel | str, properties: Mapping[str, Any]) -> None:
    """Raise ``InvalidChargeProperties`` when ``properties`` break ``model``'s rules."""
    kind = _charge_model(model)
    if kind in _TIERS_KEY:
        key = _TIERS_KEY[kind]
        _check_tier_layout(key, _tiers(properties, key, _TIER_PRICE_KEY[kind]))
    elif kind == ChargeModel.PERCENTAGE:
        terms = _percentage_terms(properties)
        low, high = terms.min_amount, terms.max_amount
        if low is not None and high is not None and low > high:
            raise InvalidChargeProperties(
                f"per_transaction_min_amount ({low}) must not exceed "
                f"per_transaction_max_amount ({high})"
            )
    else:
        # standard and package have no cross-field rules: pricing 0 units reads them all.
        _PRICERS[kind](properties, _ZERO, ())


# --------------------------------------------------------------------------- models


def _standard(properties: Mapping[str, Any], units: Decimal, _: Sequence[Decimal]) -> Decimal:
    """units x amount."""
    return units * _amount(properties, "amount")


def _package(properties: Mapping[str, Any], units: Decimal, _: Sequence[Decimal]) -> Decimal:
    """ceil(paid units / package_size) packages x amount; a package counts from its first unit."""
    amount = _amount(properties, "amount")
    package_size = _amount(properties, "package_size")
    if package_size < 1:
        raise InvalidChargeProperties(f"package_size must be at least 1, got {package_size}")
    free_units = _amount(properties, "free_units", default=_ZERO)
    paid_units = max(units - free_units, _ZERO)
    packages = (paid_units / package_size).to_integral_value(rounding=ROUND_CEILING)
    return packages * amount


def _graduated(properties: Mapping[str, Any], units: Decimal, _: Sequence[Decimal]) -> Decimal:
    """Every tier reached adds its units x per_unit_amount + its flat_amount."""
    return _graduated_total(_tiers(properties, "graduated_ranges", "per_unit_amount"), units)


def _graduated_percentage(
    properties: Mapping[str, Any], units: Decimal, _: Sequence[Decimal]
) -> Decimal:
    """Like graduated, each tier reached adds its units x rate/100 + its flat_amount."""
    tiers = _tiers(properties, "graduated_percentage_ranges", "rate")
    return _graduated_total(tiers, units)


def _volume(properties: Mapping[str, Any], units: Decimal, _: Sequence[Decimal]) -> Decimal:
    """One tier prices all units: units x per_unit_amount + flat_amount (even at 0 units).

    The tier is the first with from <= ceil(units) and (to is open or units <= to), so
    10.5 units fall in "11-20" rather than between "0-10" and "11-20".
    """
    rounded_up = units.to_integral_value(rounding=ROUND_CEILING)
    tiers = sorted(_tiers(properties, "volume_ranges", "per_unit_amount"), key=_from_value)
    for tier in tiers:
        if tier.from_value <= rounded_up and (tier.to_value is None or units <= tier.to_value):
            return units * tier.unit_price + tier.flat_amount
    return _ZERO  # no tier matches: only possible with tiers that leave gaps


def _percentage(
    properties: Mapping[str, Any], units: Decimal, event_values: Sequence[Decimal]
) -> Decimal:
    """paid value x rate/100 + paid events x fixed_amount, after the free allowance.

    Without per-event values (e.g. an operator's "total units" edit) ``units`` is priced
    as one transaction: the free value per total aggregation applies to it, the free
    events cannot (the events are unknown), and it pays ``fixed_amount`` once if any of
    it is paid.
    """
    terms = _percentage_terms(properties)
    if event_values:
        # A negative event (a refund) cannot make a percentage fee give money back.
        transactions = _paid_transactions(terms, [max(v, _ZERO) for v in event_values])
    elif units > 0:
        transactions = _paid_transactions(terms.without_free_events(), [units])
    else:
        transactions = []

    if terms.min_amount is None and terms.max_amount is None:
        paid_value = sum((paid for paid, _ in transactions), _ZERO)
        paid_events = sum(1 for _, is_paid in transactions if is_paid)
        return paid_value * terms.rate / _HUNDRED + paid_events * terms.fixed_amount
    # With a per-transaction min or max each paid event is priced and clamped on its own.
    return sum(
        (
            terms.clamp(paid * terms.rate / _HUNDRED + terms.fixed_amount)
            for paid, is_paid in transactions
            if is_paid
        ),
        _ZERO,
    )


_PRICERS: dict[ChargeModel, Callable[[Mapping[str, Any], Decimal, Sequence[Decimal]], Decimal]] = {
    ChargeModel.STANDARD: _standard,
    ChargeModel.PACKAGE: _package,
    ChargeModel.GRADUATED: _graduated,
    ChargeModel.VOLUME: _volume,
    ChargeModel.PERCENTAGE: _percentage,
    ChargeModel.GRADUATED_PERCENTAGE: _graduated_percentage,
}


# --------------------------------------------------------------------------- tiers


@dataclass(frozen=True)
class _Tier:
    from_value: Decimal
    to_value: Decimal | None  # None: open-ended (last tier)
    unit_price: Decimal  # per_unit_amount, or rate/100 for graduated_percentage
    flat_amount: Decimal


_TIERS_KEY = {
    ChargeModel.GRADUATED: "graduated_ranges",
    ChargeModel.VOLUME: "volume_ranges",
    ChargeModel.GRADUATED_PERCENTAGE: "graduated_percentage_ranges",
}
_TIER_PRICE_KEY = {
    ChargeModel.GRADUATED: "per_unit_amount",
    ChargeModel.VOLUME: "per_unit_amount",
    ChargeModel.GRADUATED_PERCENTAGE: "rate",
}


def _graduated_total(tiers: Sequence[_Tier], units: Decimal) -> Decimal:
    """Sum over the tiers reached; the first tier is always reached (its flat amount too).

    Units in a tier: min(units, to) - from, plus 1 when the tier follows its predecessor
    with a step (from = previous to + 1, e.g. 0-10, 11-20: the second tier holds units
    11..20, that is 10 units); no +1 for adjacent tiers (from = previous to, e.g. 0-10,
    10-20). A tier after the first is reached only when units exceed the previous to.
    """
    total = _ZERO
    previous_to: Decimal | None = None
    for tier in tiers:
        top = units if tier.to_value is None else min(units, tier.to_value)
        units_in_tier = top - tier.from_value
        if previous_to is not None and tier.from_value == previous_to + 1:
            units_in_tier += 1
        total += max(units_in_tier, _ZERO) * tier.unit_price + tier.flat_amount
        if tier.to_value is None or units <= tier.to_value:
            break
        previous_to = tier.to_value
    return total


def _tiers(properties: Mapping[str, Any], key: str, price_key: str) -> list[_Tier]:
    ranges = properties.get(key)
    if not isinstance(ranges, Sequence) or isinstance(ranges, str) or not ranges:
        raise InvalidChargeProperties(f"{key}: a non-empty list of ranges is required")
    tiers = []
    for index, item in enumerate(ranges):
        where = f"{key}[{index}]"
        if not isinstance(item, Mapping):
            raise InvalidChargeProperties(f"{where}: a range must be an object")
        to_value = item.get("to_value")
        price = _amount(item, price_key, where=where)
        tiers.append(
            _Tier(
                from_value=_amount(item, "from_value", where=where, default=_ZERO),
                to_value=None if to_value is None else _amount(item, "to_value", where=where),
                unit_price=price / _HUNDRED if price_key == "rate" else price,
                flat_amount=_amount(item, "flat_amount", where=where, default=_ZERO),
            )
        )
    return tiers


def _from_value(tier: _Tier) -> Decimal:
    return tier.from_value


def _check_tier_layout(key: str, tiers: Sequence[_Tier]) -> None:
    """Tiers start at 0, follow each other without gap or overlap, and the last is open.

    The next tier starts at the previous ``to_value`` (adjacent) or at ``to_value + 1``.
    """
    if tiers[0].from_value != 0:
        raise InvalidChargeProperties(
            f"{key}[0].from_value: the first tier must start at 0, got {tiers[0].from_value}"
        )
    for index, tier in enumerate(tiers):
        where = f"{key}[{index}]"
        is_last = index == len(tiers) - 1
        if tier.to_value is None and not is_last:
            raise InvalidChargeProperties(f"{where}.to_value: only the last tier may be open-ended")
        if tier.to_value is not None and is_last:
            raise InvalidChargeProperties(
                f"{where}.to_value: the last tier must be open-ended (to_value null)"
            )
        if tier.to_value is not None and tier.to_value <= tier.from_value:
            raise InvalidChargeProperties(f"{where}: to_value must be greater than from_value")
        if index == 0:
            continue
        previous_to = tiers[index - 1].to_value
        assert previous_to is not None  # checked on the previous iteration
        if tier.from_value < previous_to:
            raise InvalidChargeProperties(
                f"{where}.from_value: tiers overlap ({tier.from_value} < previous to_value "
                f"{previous_to})"
            )
        if tier.from_value > previous_to + 1:
            raise InvalidChargeProperties(
                f"{where}.from_value: tiers leave a gap (previous to_value {previous_to}, "
                f"expected {previous_to} or {previous_to + 1})"
            )


# --------------------------------------------------------------------------- percentage


@dataclass(frozen=True)
class _PercentageTerms:
    rate: Decimal  # percent
    fixed_amount: Decimal  # per paid event
    free_events: int  # 0: not set
    free_value: Decimal  # 0: not set
    min_amount: Decimal | None
    max_amount: Decimal | None

    def without_free_events(self) -> _PercentageTerms:
        return _PercentageTerms(
            self.rate, self.fixed_amount, 0, self.free_value, self.min_amount, self.max_amount
        )

    def clamp(self, amount: Decimal) -> Decimal:
        if self.min_amount is not None and amount < self.min_amount:
            return self.min_amount
        if self.max_amount is not None and amount > self.max_amount:
            return self.max_amount
        return amount


def _percentage_terms(properties: Mapping[str, Any]) -> _PercentageTerms:
    free_events = _amount(properties, "free_units_per_events", default=_ZERO)
    if free_events != free_events.to_integral_value():
        raise InvalidChargeProperties("free_units_per_events must be a whole number of events")
    return _PercentageTerms(
        rate=_amount(properties, "rate"),
        fixed_amount=_amount(properties, "fixed_amount", default=_ZERO),
        free_events=int(free_events),
        free_value=_amount(properties, "free_units_per_total_aggregation", default=_ZERO),
        min_amount=_optional_amount(properties, "per_transaction_min_amount"),
        max_amount=_optional_amount(properties, "per_transaction_max_amount"),
    )


def _paid_transactions(
    terms: _PercentageTerms, values: Sequence[Decimal]
) -> list[tuple[Decimal, bool]]:
    """(paid value, is a paid event) per event, in timestamp order.

    The free allowance covers the first ``free_events`` events and the first
    ``free_value`` of summed value; with both set it ends at whichever is reached first.
    An event crossing the end of the free value is partly free, and a paid event.
    """
    events_left: int | None = terms.free_events or None
    value_left: Decimal | None = terms.free_value or None
    transactions = []
    for value in values:
        in_allowance = (events_left is not None or value_left is not None) and (
            (events_left is None or events_left > 0) and (value_left is None or value_left > 0)
        )
        if not in_allowance:
            transactions.append((value, True))
            continue
        free = value if value_left is None else min(value, value_left)
        if events_left is not None:
            events_left -= 1
        if value_left is not None:
            value_left -= free
        transactions.append((value - free, value > free))
    return transactions


# --------------------------------------------------------------------------- reading


def _charge_model(model: ChargeModel | str) -> ChargeModel:
    try:
        return ChargeModel(model)
    except ValueError:
        known = ", ".join(kind.value for kind in ChargeModel)
        raise InvalidChargeProperties(
            f"unknown charge model {model!r}; expected one of: {known}"
        ) from None


def _amount(
    properties: Mapping[str, Any], key: str, *, where: str = "", default: Decimal | None = None
) -> Decimal:
    """A non-negative decimal property; ``default`` when absent (required when None)."""
    path = f"{where}.{key}" if where else key
    raw = properties.get(key)
    if raw is None:
        if default is None:
            raise InvalidChargeProperties(f"{path}: missing")
        return default
    value = _decimal(raw, path)
    if value < 0:
        raise InvalidChargeProperties(f"{path}: must not be negative, got {raw!r}")
    return value


def _optional_amount(properties: Mapping[str, Any], key: str) -> Decimal | None:
    return None if properties.get(key) is None else _amount(properties, key)


def _decimal(raw: Any, path: str) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float | Decimal):
        raise InvalidChargeProperties(f"{path}: {raw!r} is not a decimal number")
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise InvalidChargeProperties(f"{path}: {raw!r} is not a decimal number") from None
    if not value.is_finite():
        raise InvalidChargeProperties(f"{path}: {raw!r} is not a finite number")
    return value


def _number(raw: Decimal | int | str, what: str) -> Decimal:
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise ValueError(f"{what} {raw!r} is not a number") from None
    if isinstance(raw, bool) or not value.is_finite():
        raise ValueError(f"{what} {raw!r} is not a finite number")
    return value
