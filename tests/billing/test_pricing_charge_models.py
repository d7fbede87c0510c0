"""Charge models (docs/architecture.md, business rules), through the public ``billing.pricing.charge_amount``."""

from decimal import Decimal
from typing import Any

import pytest

from billing.errors import InvalidChargeProperties
from billing.pricing import charge_amount

D = Decimal


def tier(frm: int, to: int | None, per_unit: str, flat: str = "0") -> dict[str, Any]:
    return {"from_value": frm, "to_value": to, "per_unit_amount": per_unit, "flat_amount": flat}


# --------------------------------------------------------------------------- standard


@pytest.mark.parametrize(
    ("units", "expected"),
    [("0", "0"), ("1", "0.25"), ("10", "2.5"), ("2.5", "0.625"), ("-3", "0"), (7, "1.75")],
)
def test_standard(units: Any, expected: str) -> None:
    assert charge_amount("standard", {"amount": "0.25"}, units) == D(expected)


# --------------------------------------------------------------------------- package

PACKAGE = {"amount": "5", "package_size": 10, "free_units": 100}


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        ("0", "0"),
        ("100", "0"),  # all free
        ("100.5", "5"),  # half a paid unit starts a package
        ("101", "5"),
        ("110", "5"),
        ("111", "10"),
        ("250", "75"),
    ],
)
def test_package(units: str, expected: str) -> None:
    assert charge_amount("package", PACKAGE, units) == D(expected)


def test_package_without_free_units() -> None:
    assert charge_amount("package", {"amount": "2", "package_size": "3"}, 7) == 6


# --------------------------------------------------------------------------- graduated

# Non-adjacent tiers: 0-10, 11-20, 21-. The second tier holds units 11..20 (10 units).
STEPPED = {
    "graduated_ranges": [
        tier(0, 10, "1", flat="2"),
        tier(11, 20, "0.5", flat="3"),
        tier(21, None, "0.1", flat="4"),
    ]
}
# Adjacent tiers: 0-10, 10-20, 20-. The second tier holds units (10, 20] (10 units).
ADJACENT = {
    "graduated_ranges": [
        tier(0, 10, "1", flat="2"),
        tier(10, 20, "0.5", flat="3"),
        tier(20, None, "0.1", flat="4"),
    ]
}


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        ("0", "2"),  # the first tier's flat amount even at 0 units
        ("1", "3"),  # 1 x 1 + 2
        ("10", "12"),  # tier edge: the second tier is not reached
        ("10.5", "15.25"),  # 10 + 2 | 0.5 x 0.5 + 3
        ("11", "15.5"),  # 10 + 2 | 1 x 0.5 + 3
        ("20", "20"),  # 12 | 10 x 0.5 + 3
        ("21", "24.1"),  # 12 | 8 | 1 x 0.1 + 4
        ("30", "25"),  # 12 | 8 | 10 x 0.1 + 4
    ],
)
def test_graduated_non_adjacent_tiers(units: str, expected: str) -> None:
    assert charge_amount("graduated", STEPPED, units) == D(expected)


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        ("0", "2"),
        ("10", "12"),
        ("10.5", "15.25"),
        ("11", "15.5"),
        ("20", "20"),
        ("21", "24.1"),
        ("30", "25"),
    ],
)
def test_graduated_adjacent_tiers(units: str, expected: str) -> None:
    assert charge_amount("graduated", ADJACENT, units) == D(expected)


def test_graduated_adjacent_and_stepped_tiers_count_units_differently() -> None:
    # The same bounds read as adjacent vs stepped: 0-10, 10-20 vs 0-10, 11-20 (no flats).
    adjacent = {"graduated_ranges": [tier(0, 10, "0"), tier(10, 20, "1"), tier(20, None, "0")]}
    stepped = {"graduated_ranges": [tier(0, 10, "0"), tier(11, 20, "1"), tier(21, None, "0")]}
    assert charge_amount("graduated", adjacent, 15) == 5  # units 10 < u <= 15
    assert charge_amount("graduated", stepped, 15) == 5  # units 11..15
    assert charge_amount("graduated", adjacent, 20) == 10
    assert charge_amount("graduated", stepped, 20) == 10


def test_graduated_free_first_tier() -> None:
    free_first = {"graduated_ranges": [tier(0, 100, "0"), tier(101, None, "0.02")]}
    assert charge_amount("graduated", free_first, 100) == 0
    assert charge_amount("graduated", free_first, 150) == D("1.00")


def test_graduated_ranges_given_as_decimal_strings() -> None:
    ranges = {
        "graduated_ranges": [
            {"from_value": "0", "to_value": "5", "per_unit_amount": "2", "flat_amount": "0"},
            {"from_value": "6", "to_value": None, "per_unit_amount": "1", "flat_amount": "0"},
        ]
    }
    assert charge_amount("graduated", ranges, 8) == 13


# --------------------------------------------------------------------------- volume

VOLUME = {
    "volume_ranges": [
        tier(0, 100, "2", flat="1"),
        tier(101, 200, "1", flat="10"),
        tier(201, None, "0.5", flat="20"),
    ]
}


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        ("0", "1"),  # flat amount even at 0 units
        ("1", "3"),
        ("100", "201"),  # edge: still the first tier
        ("100.5", "110.5"),  # ceil(100.5) = 101: the second tier prices all units
        ("101", "111"),
        ("200", "210"),
        ("201", "120.5"),  # all units at the third tier's price
        ("1000", "520"),
    ],
)
def test_volume(units: str, expected: str) -> None:
    assert charge_amount("volume", VOLUME, units) == D(expected)


def test_volume_adjacent_tiers() -> None:
    adjacent = {"volume_ranges": [tier(0, 10, "1"), tier(10, None, "0.5")]}
    assert charge_amount("volume", adjacent, 10) == 10
    assert charge_amount("volume", adjacent, "10.2") == D("5.1")


# --------------------------------------------------------------------------- percentage


def test_percentage_plain_rate() -> None:
    assert charge_amount("percentage", {"rate": "1.5"}, "200") == D("3")
    assert charge_amount("percentage", {"rate": "1.5"}, "200", ["50", "150"]) == D("3")


def test_percentage_fixed_amount_per_paid_event() -> None:
    props = {"rate": "2", "fixed_amount": "0.10"}
    # 2% of 300 + 3 events x 0.10.
    assert charge_amount("percentage", props, 300, [100, 100, 100]) == D("6.30")


def test_percentage_free_events() -> None:
    props = {"rate": "10", "fixed_amount": "1", "free_units_per_events": 2}
    # First two events (5 and 7) free; 20 and 30 paid: 5 + 2 x 1.
    assert charge_amount("percentage", props, 62, [5, 7, 20, 30]) == D("7")


def test_percentage_free_value_crossing_inside_an_event() -> None:
    props = {"rate": "10", "fixed_amount": "1", "free_units_per_total_aggregation": "100"}
    # 60 free; 50: 40 free + 10 paid (a paid event); 30 paid. 40 x 10% + 2 x 1.
    assert charge_amount("percentage", props, 140, [60, 50, 30]) == D("6")


def test_percentage_event_ending_exactly_on_the_free_value_is_free() -> None:
    props = {"rate": "10", "fixed_amount": "1", "free_units_per_total_aggregation": "100"}
    # 60 + 40 exhaust the allowance exactly: both free; 30 paid.
    assert charge_amount("percentage", props, 130, [60, 40, 30]) == D("4")


def test_percentage_free_events_reached_before_free_value() -> None:
    props = {
        "rate": "10",
        "fixed_amount": "1",
        "free_units_per_events": 2,
        "free_units_per_total_aggregation": "1000",
    }
    # The 2 free events end the allowance although 900 of value would still be free.
    assert charge_amount("percentage", props, 300, [50, 50, 200]) == D("21")


def test_percentage_free_value_reached_before_free_events() -> None:
    props = {
        "rate": "10",
        "fixed_amount": "1",
        "free_units_per_events": 3,
        "free_units_per_total_aggregation": "100",
    }
    # 80 free; 50: 20 free + 30 paid and the allowance ends; 10 paid. 40 x 10% + 2.
    assert charge_amount("percentage", props, 140, [80, 50, 10]) == D("6")


def test_percentage_min_and_max_per_transaction() -> None:
    props = {
        "rate": "1",
        "fixed_amount": "0.10",
        "per_transaction_min_amount": "0.50",
        "per_transaction_max_amount": "2",
    }
    # 10 -> 0.20 -> min 0.50; 100 -> 1.10; 1000 -> 10.10 -> max 2.
    assert charge_amount("percentage", props, 1110, [10, 100, 1000]) == D("3.60")


def test_percentage_min_only_and_max_only() -> None:
    min_only = {"rate": "1", "per_transaction_min_amount": "1"}
    max_only = {"rate": "1", "per_transaction_max_amount": "1"}
    assert charge_amount("percentage", min_only, 550, [50, 500]) == D("6")  # 1 + 5
    assert charge_amount("percentage", max_only, 550, [50, 500]) == D("1.5")  # 0.5 + 1


def test_percentage_min_max_with_free_units() -> None:
    props = {
        "rate": "10",
        "free_units_per_total_aggregation": "100",
        "per_transaction_min_amount": "3",
    }
    # 70 fully free (costs 0, not the minimum); 50: 30 free, 20 paid -> 2 -> min 3;
    # 200 -> 20.
    assert charge_amount("percentage", props, 320, [70, 50, 200]) == D("23")


def test_percentage_without_event_values_prices_units_as_one_transaction() -> None:
    props = {
        "rate": "10",
        "fixed_amount": "1",
        "free_units_per_events": 5,  # events unknown: not applied
        "free_units_per_total_aggregation": "100",
    }
    assert charge_amount("percentage", props, 250) == D("16")  # 150 x 10% + 1
    assert charge_amount("percentage", props, 80) == D("0")
    assert charge_amount("percentage", props, 0) == D("0")
    clamped = {"rate": "10", "per_transaction_max_amount": "5"}
    assert charge_amount("percentage", clamped, 250) == D("5")


def test_percentage_zero_units_costs_nothing() -> None:
    assert charge_amount("percentage", {"rate": "3", "fixed_amount": "2"}, 0) == 0


# --------------------------------------------------------------------------- graduated %

GRADUATED_PERCENTAGE = {
    "graduated_percentage_ranges": [
        {"from_value": 0, "to_value": 1000, "rate": "2", "flat_amount": "1"},
        {"from_value": 1001, "to_value": None, "rate": "1", "flat_amount": "5"},
    ]
}


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        ("0", "1"),  # first tier's flat amount at 0 units
        ("500", "11"),  # 500 x 2% + 1
        ("1000", "21"),
        ("1500", "31"),  # 21 | 500 x 1% + 5
    ],
)
def test_graduated_percentage(units: str, expected: str) -> None:
    amount = charge_amount("graduated_percentage", GRADUATED_PERCENTAGE, units)
    assert amount == D(expected)


# --------------------------------------------------------------------------- errors


def test_unknown_model() -> None:
    with pytest.raises(InvalidChargeProperties, match="unknown charge model 'dynamic'"):
        charge_amount("dynamic", {}, 1)


@pytest.mark.parametrize(
    ("model", "properties", "message"),
    [
        ("standard", {}, "amount: missing"),
        ("standard", {"amount": "ten"}, "amount: 'ten' is not a decimal number"),
        ("standard", {"amount": "-1"}, "amount: must not be negative"),
        ("package", {"amount": "1", "package_size": 0}, "package_size must be at least 1"),
        ("percentage", {"fixed_amount": "1"}, "rate: missing"),
        ("graduated", {"graduated_ranges": []}, "graduated_ranges: a non-empty list"),
        (
            "volume",
            {"volume_ranges": [{"from_value": 0, "to_value": None, "flat_amount": "1"}]},
            r"volume_ranges\[0\].per_unit_amount: missing",
        ),
    ],
)
def test_properties_that_cannot_be_priced(
    model: str, properties: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidChargeProperties, match=message):
        charge_amount(model, properties, 1)


def test_volume_tiers_given_out_of_order() -> None:
    shuffled = {"volume_ranges": [tier(11, None, "0.5"), tier(0, 10, "1")]}
    assert charge_amount("volume", shuffled, 5) == 5
    assert charge_amount("volume", shuffled, 12) == 6


def test_percentage_negative_event_values_count_as_zero() -> None:
    props = {"rate": "10", "fixed_amount": "1"}
    assert charge_amount("percentage", props, 80, [100, -20]) == D("12")  # 10 + 2 x 1
