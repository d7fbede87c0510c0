"""The metric's rounding, charge validation, and the pinned public API of billing.pricing."""

from decimal import Decimal
from typing import Any

import pytest

import billing.pricing
from billing.errors import InvalidChargeProperties
from billing.models import AggregationType, BillableMetric, Charge, ChargeModel
from billing.pricing import round_units, validate_charge


def test_public_api_of_billing_pricing_is_pinned() -> None:
    assert sorted(billing.pricing.__all__) == [
        "aggregate",
        "charge_amount",
        "round_units",
        "validate_charge",
    ]
    for name in billing.pricing.__all__:
        assert callable(getattr(billing.pricing, name))


# --------------------------------------------------------------------------- rounding


def metric(function: str | None, precision: int | None = None) -> BillableMetric:
    return BillableMetric(
        code="storage",
        aggregation_type=AggregationType.SUM,
        field_name="gb",
        rounding_function=function,
        rounding_precision=precision,
    )


@pytest.mark.parametrize(
    ("function", "precision", "value", "expected"),
    [
        (None, None, "1.23456", "1.23456"),  # no rounding
        ("round", None, "2.5", "3"),  # half up, precision 0 by default
        ("round", None, "3.5", "4"),  # not banker's rounding
        ("round", 2, "1.005", "1.01"),
        ("round", 2, "1.004", "1.00"),
        ("ceil", None, "1.01", "2"),
        ("ceil", 1, "1.01", "1.1"),
        ("floor", None, "1.99", "1"),
        ("floor", 1, "1.99", "1.9"),
        ("round", -2, "1250", "1300"),  # negative precision: hundreds
        ("round", -2, "1249.99", "1200"),
        ("ceil", -1, "1201", "1210"),
        ("floor", -3, "12999", "12000"),
    ],
)
def test_round_units(
    function: str | None, precision: int | None, value: str, expected: str
) -> None:
    rounded = round_units(metric(function, precision), Decimal(value))
    assert rounded == Decimal(expected)
    assert str(rounded) == expected


# --------------------------------------------------------------------------- validation


def charge(model: ChargeModel, properties: dict[str, Any], code: str = "storage") -> Charge:
    return Charge(billable_metric_code=code, charge_model=model, properties=properties)


def tier(frm: int, to: int | None, per_unit: str = "1", flat: str = "0") -> dict[str, Any]:
    return {"from_value": frm, "to_value": to, "per_unit_amount": per_unit, "flat_amount": flat}


SUM = metric(None)
COUNT = BillableMetric(code="storage", aggregation_type=AggregationType.COUNT)


@pytest.mark.parametrize(
    ("model", "properties"),
    [
        (ChargeModel.STANDARD, {"amount": "0.5"}),
        (ChargeModel.PACKAGE, {"amount": "5", "package_size": 10, "free_units": 0}),
        (ChargeModel.GRADUATED, {"graduated_ranges": [tier(0, 10), tier(11, None)]}),
        (ChargeModel.GRADUATED, {"graduated_ranges": [tier(0, 10), tier(10, None)]}),
        (ChargeModel.VOLUME, {"volume_ranges": [tier(0, None)]}),
        (
            ChargeModel.PERCENTAGE,
            {
                "rate": "1",
                "fixed_amount": "0.1",
                "free_units_per_events": 3,
                "free_units_per_total_aggregation": "100",
                "per_transaction_min_amount": "1",
                "per_transaction_max_amount": "5",
            },
        ),
        (
            ChargeModel.GRADUATED_PERCENTAGE,
            {
                "graduated_percentage_ranges": [
                    {"from_value": 0, "to_value": None, "rate": "1", "flat_amount": "0"},
                ]
            },
        ),
    ],
)
def test_valid_charges(model: ChargeModel, properties: dict[str, Any]) -> None:
    validate_charge(charge(model, properties), SUM)


@pytest.mark.parametrize(
    ("model", "properties", "message"),
    [
        (ChargeModel.STANDARD, {}, "properties.amount: missing"),
        (ChargeModel.STANDARD, {"amount": "1,5"}, "'1,5' is not a decimal number"),
        (ChargeModel.STANDARD, {"amount": "-0.01"}, "must not be negative"),
        (
            ChargeModel.PACKAGE,
            {"amount": "5", "package_size": "0.5"},
            "package_size must be at least 1",
        ),
        (
            ChargeModel.GRADUATED,
            {"graduated_ranges": [tier(1, 10), tier(11, None)]},
            "the first tier must start at 0",
        ),
        (
            ChargeModel.GRADUATED,
            {"graduated_ranges": [tier(0, 10), tier(9, None)]},
            "tiers overlap",
        ),
        (
            ChargeModel.VOLUME,
            {"volume_ranges": [tier(0, 10), tier(12, None)]},
            "tiers leave a gap",
        ),
        (
            ChargeModel.GRADUATED,
            {"graduated_ranges": [tier(0, 10), tier(11, 20)]},
            "the last tier must be open-ended",
        ),
        (
            ChargeModel.GRADUATED,
            {"graduated_ranges": [tier(0, None), tier(11, None)]},
            "only the last tier may be open-ended",
        ),
        (
            ChargeModel.VOLUME,
            {"volume_ranges": [tier(0, 0), tier(1, None)]},
            "to_value must be greater than from_value",
        ),
        (
            ChargeModel.GRADUATED,
            {"graduated_ranges": [tier(0, None, flat="-1")]},
            r"graduated_ranges\[0\].flat_amount: must not be negative",
        ),
        (
            ChargeModel.PERCENTAGE,
            {"rate": "1", "per_transaction_min_amount": "5", "per_transaction_max_amount": "1"},
            "per_transaction_min_amount .* must not exceed",
        ),
        (
            ChargeModel.PERCENTAGE,
            {"rate": "1", "free_units_per_events": "1.5"},
            "whole number of events",
        ),
    ],
)
def test_invalid_charges(model: ChargeModel, properties: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidChargeProperties, match=message):
        validate_charge(charge(model, properties), SUM)


def test_percentage_models_need_a_sum_aggregation() -> None:
    with pytest.raises(InvalidChargeProperties, match="percentage model cannot price a count"):
        validate_charge(charge(ChargeModel.PERCENTAGE, {"rate": "1"}), COUNT)
    validate_charge(charge(ChargeModel.VOLUME, {"volume_ranges": [tier(0, None)]}), COUNT)


def test_charge_must_price_its_own_metric() -> None:
    with pytest.raises(InvalidChargeProperties, match="prices metric 'api_calls'"):
        validate_charge(charge(ChargeModel.STANDARD, {"amount": "1"}, code="api_calls"), SUM)
