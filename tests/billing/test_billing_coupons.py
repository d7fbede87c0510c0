"""Giving a coupon to a customer: its value, with the caller's overrides, and its counters."""

from __future__ import annotations

from decimal import Decimal

from billing.coupons import applied_coupon
from billing.models import AppliedCoupon, Coupon, CouponFrequency, CouponType

FIXED_ONCE = Coupon(code="welcome", coupon_type=CouponType.FIXED_AMOUNT, amount_cents=500)
PERCENT_RECURRING = Coupon(
    code="launch",
    coupon_type=CouponType.PERCENTAGE,
    percentage_rate=Decimal("10"),
    frequency=CouponFrequency.RECURRING,
    frequency_duration=3,
)


def test_a_fixed_once_coupon_carries_its_whole_amount() -> None:
    applied = applied_coupon(FIXED_ONCE, applied_coupon_id="a1", customer_external_id="c")
    assert applied == AppliedCoupon(
        id="a1",
        coupon_code="welcome",
        customer_external_id="c",
        coupon_type=CouponType.FIXED_AMOUNT,
        amount_cents=500,
        percentage_rate=None,
        frequency=CouponFrequency.ONCE,
        frequency_duration_remaining=None,
        amount_cents_remaining=500,
        status="active",
    )


def test_overrides_replace_the_coupons_own_value_of_its_kind_only() -> None:
    fixed = applied_coupon(
        FIXED_ONCE,
        applied_coupon_id="a1",
        customer_external_id="c",
        amount_cents=300,
        percentage_rate=Decimal("50"),
    )
    assert (fixed.amount_cents, fixed.amount_cents_remaining, fixed.percentage_rate) == (
        300,
        300,
        None,
    )
    percent = applied_coupon(
        PERCENT_RECURRING,
        applied_coupon_id="a2",
        customer_external_id="c",
        amount_cents=300,
        percentage_rate=Decimal("25"),
    )
    assert (percent.amount_cents, percent.percentage_rate) == (None, Decimal("25"))


def test_a_recurring_coupon_counts_its_periods_and_keeps_no_remaining_amount() -> None:
    applied = applied_coupon(PERCENT_RECURRING, applied_coupon_id="a2", customer_external_id="c")
    assert (applied.frequency_duration_remaining, applied.amount_cents_remaining) == (3, None)
    forever = Coupon(
        code="vip",
        coupon_type=CouponType.FIXED_AMOUNT,
        amount_cents=100,
        frequency=CouponFrequency.FOREVER,
    )
    applied = applied_coupon(forever, applied_coupon_id="a3", customer_external_id="c")
    assert (applied.frequency_duration_remaining, applied.amount_cents_remaining) == (None, None)
