"""Property tests (hypothesis) of the pricing core and the fee rounding."""

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from billing.fees import charge_fee
from billing.models import AggregationType, BillableMetric, Charge, ChargeModel, ChargeUsage
from billing.money import to_cents
from billing.pricing import charge_amount

units = st.decimals(min_value=-100, max_value=10_000, places=3, allow_nan=False)
prices = st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False)
event_values = st.lists(
    st.decimals(min_value=0, max_value=1000, places=2, allow_nan=False), max_size=20
)


@st.composite
def tiers(draw: st.DrawFn, price_key: str = "per_unit_amount") -> list[dict[str, Any]]:
    """Valid tiers: from 0, adjacent or stepped by one, the last open-ended."""
    bounds = sorted(draw(st.sets(st.integers(min_value=1, max_value=5000), max_size=5)))
    adjacent = draw(st.booleans())
    ranges, start = [], 0
    for bound in [*bounds, None]:
        if bound is not None and bound <= start:
            continue
        ranges.append(
            {
                "from_value": start,
                "to_value": bound,
                price_key: str(draw(prices)),
                "flat_amount": str(draw(prices)),
            }
        )
        if bound is not None:
            start = bound if adjacent else bound + 1
    return ranges


@st.composite
def any_charge(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    model = draw(st.sampled_from([m.value for m in ChargeModel]))
    if model == "standard":
        return model, {"amount": str(draw(prices))}
    if model == "package":
        size = draw(st.integers(min_value=1, max_value=100))
        free = draw(st.integers(min_value=0, max_value=100))
        return model, {"amount": str(draw(prices)), "package_size": size, "free_units": free}
    if model == "percentage":
        props: dict[str, Any] = {
            "rate": str(draw(st.decimals(min_value=0, max_value=100, places=2))),
            "fixed_amount": str(draw(prices)),
            "free_units_per_events": draw(st.integers(min_value=0, max_value=5)),
            "free_units_per_total_aggregation": str(draw(prices)),
        }
        if draw(st.booleans()):
            low = draw(prices)
            props["per_transaction_min_amount"] = str(low)
            props["per_transaction_max_amount"] = str(low + draw(prices))
        return model, props
    if model == "graduated_percentage":
        return model, {"graduated_percentage_ranges": draw(tiers("rate"))}
    key = "graduated_ranges" if model == "graduated" else "volume_ranges"
    return model, {key: draw(tiers())}


@given(any_charge(), units, event_values)
def test_amounts_are_never_negative(
    charge: tuple[str, dict[str, Any]], count: Decimal, values: list[Decimal]
) -> None:
    model, properties = charge
    assert charge_amount(model, properties, count) >= 0
    if model == "percentage":
        assert charge_amount(model, properties, sum(values, Decimal(0)), values) >= 0


@given(tiers(), units, units)
def test_graduated_totals_never_decrease_as_units_grow(
    ranges: list[dict[str, Any]], a: Decimal, b: Decimal
) -> None:
    low, high = sorted((a, b))
    properties = {"graduated_ranges": ranges}
    assert charge_amount("graduated", properties, low) <= charge_amount(
        "graduated", properties, high
    )


@given(tiers("rate"), units, units)
def test_graduated_percentage_totals_never_decrease(
    ranges: list[dict[str, Any]], a: Decimal, b: Decimal
) -> None:
    low, high = sorted((a, b))
    properties = {"graduated_percentage_ranges": ranges}
    model = "graduated_percentage"
    assert charge_amount(model, properties, low) <= charge_amount(model, properties, high)


@given(
    st.lists(st.integers(min_value=1, max_value=1000), max_size=4, unique=True),
    prices,
    units,
    units,
)
def test_volume_with_one_price_and_no_flat_never_decreases(
    bounds: list[int], price: Decimal, a: Decimal, b: Decimal
) -> None:
    # Volume can drop at a tier boundary when the next tier is cheaper; with a single
    # per-unit price and no flat amounts it is standard pricing, hence monotonic.
    bounds = sorted(bounds)
    starts = [0, *(bound + 1 for bound in bounds)]
    ranges = [
        {"from_value": s, "to_value": e, "per_unit_amount": str(price), "flat_amount": "0"}
        for s, e in zip(starts, [*bounds, None], strict=True)
    ]
    low, high = sorted((a, b))
    properties = {"volume_ranges": ranges}
    assert charge_amount("volume", properties, low) <= charge_amount("volume", properties, high)
    assert charge_amount("volume", properties, high) == max(high, Decimal(0)) * price


@given(tiers(), units)
def test_volume_prices_all_units_in_one_tier(ranges: list[dict[str, Any]], count: Decimal) -> None:
    amount = charge_amount("volume", {"volume_ranges": ranges}, count)
    candidates = {
        max(count, Decimal(0)) * Decimal(r["per_unit_amount"]) + Decimal(r["flat_amount"])
        for r in ranges
    }
    assert amount in candidates


@given(prices, units)
def test_single_tier_graduated_equals_standard(price: Decimal, count: Decimal) -> None:
    single = {
        "graduated_ranges": [
            {"from_value": 0, "to_value": None, "per_unit_amount": str(price), "flat_amount": "0"}
        ]
    }
    assert charge_amount("graduated", single, count) == charge_amount(
        "standard", {"amount": str(price)}, count
    )


METRIC = BillableMetric(code="m", aggregation_type=AggregationType.SUM, field_name="v")


@given(
    st.decimals(min_value="0.00001", max_value="0.99999", places=5),
    st.integers(min_value=1, max_value=100_000),
)
def test_fee_rounds_half_up_once(price: Decimal, count: int) -> None:
    charge = Charge(
        billable_metric_code="m",
        charge_model=ChargeModel.STANDARD,
        properties={"amount": str(price)},
    )
    fee = charge_fee(charge, METRIC, ChargeUsage(units=Decimal(count), events_count=1), "USD")
    precise = price * count
    assert fee is not None
    assert fee.precise_amount == precise  # kept unrounded
    expected = int((precise * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert fee.amount_cents == expected == to_cents(precise, "USD")
    assert abs(Decimal(fee.amount_cents) - precise * 100) <= Decimal("0.5")
