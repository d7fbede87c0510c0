"""Giving a coupon to a customer: what the applied coupon starts with.

What a coupon takes from an invoice at finalization is in :mod:`billing.invoicing`.
"""

from __future__ import annotations

from decimal import Decimal

from billing.models import AppliedCoupon, Coupon, CouponFrequency, CouponType

__all__ = ["applied_coupon"]


def applied_coupon(
    coupon: Coupon,
    *,
    applied_coupon_id: str,
    customer_external_id: str,
    amount_cents: int | None = None,
    percentage_rate: Decimal | None = None,
) -> AppliedCoupon:
    """The coupon as applied to a customer, with the caller's overrides of its value.

    A fixed coupon keeps an amount (``amount_cents`` or the coupon's own), a percentage
    coupon a rate; a fixed ``once`` coupon carries what is left of it over invoices, a
    ``recurring`` one counts the periods it still applies to.

    >>> coupon = Coupon(code="welcome", coupon_type="fixed_amount", amount_cents=500)
    >>> applied = applied_coupon(coupon, applied_coupon_id="a1", customer_external_id="c",
    ...                        amount_cents=300)
    >>> applied.amount_cents, applied.amount_cents_remaining, applied.percentage_rate
    (300, 300, None)
    """
    fixed = coupon.coupon_type == CouponType.FIXED_AMOUNT
    amount = (amount_cents if amount_cents is not None else coupon.amount_cents) if fixed else None
    rate = (
        None
        if fixed
        else (percentage_rate if percentage_rate is not None else coupon.percentage_rate)
    )
    return AppliedCoupon(
        id=applied_coupon_id,
        coupon_code=coupon.code,
        customer_external_id=customer_external_id,
        coupon_type=coupon.coupon_type,
        amount_cents=amount,
        percentage_rate=rate,
        frequency=coupon.frequency,
        frequency_duration_remaining=coupon.frequency_duration
        if coupon.frequency == CouponFrequency.RECURRING
        else None,
        amount_cents_remaining=amount
        if fixed and coupon.frequency == CouponFrequency.ONCE
        else None,
        status="active",
    )
