"""Fees of a period: plan fee with proration, charge fees, adjusted fees."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from billing.errors import UnknownCharge
from billing.fees import charge_fee, compute_fees, plan_fee
from billing.models import (
    AdjustedFee,
    AdjustmentMode,
    AggregationType,
    BillableMetric,
    Charge,
    ChargeModel,
    ChargeUsage,
    FeeKind,
    Plan,
    Subscription,
)

START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 2, 1, tzinfo=UTC)

CALLS = BillableMetric(code="calls", name="API calls", aggregation_type=AggregationType.COUNT)
STORAGE = BillableMetric(
    code="storage",
    name="Storage",
    aggregation_type=AggregationType.SUM,
    field_name="gb",
    rounding_function="ceil",
)
PAYMENTS = BillableMetric(
    code="payments", aggregation_type=AggregationType.SUM, field_name="amount"
)
CALLS_CHARGE = Charge(
    billable_metric_code="calls", charge_model=ChargeModel.STANDARD, properties={"amount": "0.015"}
)
STORAGE_CHARGE = Charge(
    billable_metric_code="storage",
    charge_model=ChargeModel.GRADUATED,
    properties={
        "graduated_ranges": [
            {"from_value": 0, "to_value": 10, "per_unit_amount": "0", "flat_amount": "0"},
            {"from_value": 11, "to_value": None, "per_unit_amount": "0.5", "flat_amount": "0"},
        ]
    },
    invoice_display_name="Storage (GB)",
)
PAYMENTS_CHARGE = Charge(
    billable_metric_code="payments",
    charge_model=ChargeModel.PERCENTAGE,
    properties={"rate": "1", "fixed_amount": "0.25", "free_units_per_events": 1},
)
PLAN = Plan(
    code="pro",
    name="Pro",
    amount_cents=3100,
    charges=(CALLS_CHARGE, STORAGE_CHARGE, PAYMENTS_CHARGE),
)
METRICS = {"calls": CALLS, "storage": STORAGE, "payments": PAYMENTS}


def subscription(started_at: datetime) -> Subscription:
    return Subscription(
        external_id="sub-1", customer_external_id="c1", plan_code="pro", started_at=started_at
    )


# --------------------------------------------------------------------------- plan fee


def test_full_period_plan_fee() -> None:
    fee = plan_fee(PLAN, subscription(datetime(2025, 5, 3, tzinfo=UTC)), START, END, "USD", "UTC")
    assert fee is not None
    assert (fee.code, fee.kind, fee.display_name) == ("subscription", FeeKind.SUBSCRIPTION, "Pro")
    assert (fee.units, fee.amount_cents, fee.precise_amount) == (1, 3100, Decimal("31"))


def test_plan_fee_prorated_by_days() -> None:
    # Started January 20: 12 of 31 days of 31.00 = 12.00.
    fee = plan_fee(
        PLAN, subscription(datetime(2026, 1, 20, 9, tzinfo=UTC)), START, END, "USD", "UTC"
    )
    assert fee is not None
    assert fee.amount_cents == 1200


def test_plan_fee_prorated_rounds_half_up_once() -> None:
    plan = PLAN.model_copy(update={"amount_cents": 1000, "invoice_display_name": "Pro plan"})
    # 10.00 x 17/31 = 5.4838... -> 548 cents.
    fee = plan_fee(plan, subscription(datetime(2026, 1, 15, tzinfo=UTC)), START, END, "USD", "UTC")
    assert fee is not None
    assert fee.amount_cents == 548
    assert fee.display_name == "Pro plan"
    assert fee.precise_amount == Decimal(10) * 17 / 31


def test_free_plan_has_no_plan_fee() -> None:
    free = PLAN.model_copy(update={"amount_cents": 0})
    assert plan_fee(free, subscription(START), START, END, "USD", "UTC") is None


# --------------------------------------------------------------------------- charge fees


def test_charge_fee_rounds_once_and_keeps_the_precise_amount() -> None:
    fee = charge_fee(
        CALLS_CHARGE, CALLS, ChargeUsage(units=Decimal(1001), events_count=1001), "USD"
    )
    assert fee is not None
    assert fee.precise_amount == Decimal("15.015")
    assert fee.amount_cents == 1502  # 15.015 half up
    assert (fee.code, fee.display_name, fee.units, fee.events_count) == (
        "calls",
        "API calls",
        1001,
        1001,
    )
    assert fee.unit_amount == Decimal("0.015")
    assert fee.adjusted is False


def test_charge_fee_applies_the_metric_rounding_first() -> None:
    # 12.2 GB rounds up to 13: 10 free + 3 x 0.5.
    fee = charge_fee(
        STORAGE_CHARGE, STORAGE, ChargeUsage(units=Decimal("12.2"), events_count=4), "USD"
    )
    assert fee is not None
    assert (fee.units, fee.amount_cents, fee.display_name) == (13, 150, "Storage (GB)")


def test_zero_units_and_zero_amount_produce_no_fee() -> None:
    assert charge_fee(CALLS_CHARGE, CALLS, ChargeUsage(), "USD") is None


def test_usage_inside_a_free_tier_produces_a_zero_fee() -> None:
    fee = charge_fee(STORAGE_CHARGE, STORAGE, ChargeUsage(units=Decimal(5), events_count=1), "USD")
    assert fee is not None
    assert (fee.units, fee.amount_cents) == (5, 0)


def test_percentage_fee_uses_the_event_values() -> None:
    usage = ChargeUsage(
        units=Decimal(600), events_count=3, event_values=(Decimal(100), Decimal(200), Decimal(300))
    )
    fee = charge_fee(PAYMENTS_CHARGE, PAYMENTS, usage, "USD")
    assert fee is not None
    assert fee.amount_cents == 550  # first event free: 500 x 1% + 2 x 0.25


# --------------------------------------------------------------------------- adjustments


def test_units_adjustment_recalculates_through_the_charge_model() -> None:
    adjustment = AdjustedFee(charge_code="storage", mode=AdjustmentMode.UNITS, units=Decimal(30))
    usage = ChargeUsage(units=Decimal(12), events_count=2)
    fee = charge_fee(STORAGE_CHARGE, STORAGE, usage, "USD", adjustment)
    assert fee is not None
    assert (fee.units, fee.amount_cents, fee.adjusted) == (30, 1000, True)  # 20 paid x 0.5
    # Later usage does not change it.
    more = charge_fee(STORAGE_CHARGE, STORAGE, ChargeUsage(units=Decimal(500)), "USD", adjustment)
    assert more is not None
    assert (more.units, more.amount_cents) == (30, 1000)


def test_units_adjustment_on_percentage_prices_units_as_the_aggregate() -> None:
    adjustment = AdjustedFee(charge_code="payments", mode=AdjustmentMode.UNITS, units=Decimal(1000))
    usage = ChargeUsage(units=Decimal(10), events_count=1, event_values=(Decimal(10),))
    fee = charge_fee(PAYMENTS_CHARGE, PAYMENTS, usage, "USD", adjustment)
    assert fee is not None
    assert fee.amount_cents == 1025  # 1000 x 1% + one transaction x 0.25


def test_amount_adjustment_replaces_the_amount() -> None:
    adjustment = AdjustedFee(
        charge_code="calls",
        mode=AdjustmentMode.AMOUNT,
        units=Decimal(3),
        unit_amount=Decimal("1.005"),
        display_name="Calls (negotiated)",
    )
    usage = ChargeUsage(units=Decimal(1000), events_count=1000)
    fee = charge_fee(CALLS_CHARGE, CALLS, usage, "USD", adjustment)
    assert fee is not None
    assert fee.precise_amount == Decimal("3.015")
    assert (fee.units, fee.unit_amount, fee.amount_cents) == (3, Decimal("1.005"), 302)
    assert (fee.display_name, fee.adjusted) == ("Calls (negotiated)", True)


def test_display_name_adjustment_only_renames() -> None:
    adjustment = AdjustedFee(
        charge_code="calls", mode=AdjustmentMode.DISPLAY_NAME, display_name="Requests"
    )
    fee = charge_fee(
        CALLS_CHARGE, CALLS, ChargeUsage(units=Decimal(100), events_count=100), "USD", adjustment
    )
    assert fee is not None
    assert (fee.display_name, fee.units, fee.amount_cents, fee.adjusted) == (
        "Requests",
        100,
        150,
        True,
    )


def test_units_adjustment_with_display_name() -> None:
    adjustment = AdjustedFee(
        charge_code="calls", mode=AdjustmentMode.UNITS, units=Decimal(10), display_name="Calls*"
    )
    fee = charge_fee(CALLS_CHARGE, CALLS, ChargeUsage(units=Decimal(1)), "USD", adjustment)
    assert fee is not None
    assert (fee.display_name, fee.amount_cents) == ("Calls*", 15)


def test_adjustment_adds_a_fee_for_a_charge_without_usage() -> None:
    for adjustment in (
        AdjustedFee(charge_code="calls", mode=AdjustmentMode.UNITS, units=Decimal(200)),
        AdjustedFee(
            charge_code="calls",
            mode=AdjustmentMode.AMOUNT,
            units=Decimal(1),
            unit_amount=Decimal("3"),
        ),
    ):
        fee = charge_fee(CALLS_CHARGE, CALLS, ChargeUsage(), "USD", adjustment)
        assert fee is not None
        assert (fee.amount_cents, fee.adjusted) == (300, True)
    renamed = AdjustedFee(charge_code="calls", mode=AdjustmentMode.DISPLAY_NAME, display_name="X")
    zero = charge_fee(CALLS_CHARGE, CALLS, ChargeUsage(), "USD", renamed)
    assert zero is not None
    assert (zero.display_name, zero.units, zero.amount_cents, zero.adjusted) == ("X", 0, 0, True)


# --------------------------------------------------------------------------- all fees


def test_compute_fees_plan_first_then_charges_in_plan_order() -> None:
    usage = {
        "storage": ChargeUsage(units=Decimal(20), events_count=2),
        "calls": ChargeUsage(units=Decimal(100), events_count=100),
    }
    adjustments = {
        "payments": AdjustedFee(
            charge_code="payments",
            mode=AdjustmentMode.AMOUNT,
            units=Decimal(1),
            unit_amount=Decimal("9.99"),
        ),
    }
    fees = compute_fees(
        PLAN, METRICS, subscription(START), START, END, "USD", "UTC", usage, adjustments
    )
    assert [(fee.code, fee.amount_cents, fee.adjusted) for fee in fees] == [
        ("subscription", 3100, False),
        ("calls", 150, False),
        ("storage", 500, False),
        ("payments", 999, True),
    ]


def test_compute_fees_skips_charges_without_usage() -> None:
    fees = compute_fees(PLAN, METRICS, subscription(START), START, END, "USD", "UTC", {}, {})
    assert [fee.code for fee in fees] == ["subscription"]


def test_compute_fees_refuses_an_adjustment_of_a_charge_the_plan_does_not_have() -> None:
    adjustment = AdjustedFee(
        charge_code="seats", mode=AdjustmentMode.DISPLAY_NAME, display_name="Seats"
    )
    with pytest.raises(UnknownCharge) as error:
        compute_fees(
            PLAN, METRICS, subscription(START), START, END, "USD", "UTC", {}, {"seats": adjustment}
        )
    assert str(error.value) == (
        "charge 'seats' is not part of this subscription's plan (charges: calls, storage, payments)"
    )
