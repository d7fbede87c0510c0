"""Invoice totals (fees -> coupons -> taxes -> credits) and the empty-invoice decision."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from billing.models import AppliedCoupon, BillingEntity, Customer, Fee

__all__ = [
    "CouponConsumption", "Totals", "draft_totals", "finalization_totals",
    "finalize_zero_amount_invoice", "is_empty", "should_close", "tax_rate",
]


class CouponConsumption(BaseModel):
    """What finalizing one invoice takes from one applied coupon."""

    model_config = ConfigDict(frozen=True)
    applied_coupon_id: str
    amount_cents: int
    amount_cents_remaining: int | None  # new remaining of a fixed once coupon
    frequency_duration_remaining: int | None  # new remaining periods of a recurring coupon
    terminated: bool


class Totals(BaseModel):
    model_config = ConfigDict(frozen=True)
    fees: tuple[Fee, ...]  # with coupon and tax shares filled at finalization
    fees_amount_cents: int
    coupons_amount_cents: int
    taxes_amount_cents: int
    sub_total_excluding_taxes_amount_cents: int
    sub_total_including_taxes_amount_cents: int
    prepaid_credit_amount_cents: int
    total_amount_cents: int
    coupon_consumptions: tuple[CouponConsumption, ...] = ()


def tax_rate(customer: Customer, entity: BillingEntity) -> Decimal:
    """The customer's tax rate (percent), else the billing entity's."""
    raise NotImplementedError


def draft_totals(fees: Sequence[Fee], tax_rate: Decimal, currency: str) -> Totals:
    """Totals shown on a draft: no coupons and no credits, taxes on the fees."""
    raise NotImplementedError


def finalization_totals(
    fees: Sequence[Fee], applied_coupons: Sequence[AppliedCoupon], tax_rate: Decimal,
    wallet_balance_cents: int, currency: str,
) -> Totals:
    """Totals at finalization: coupons (only when fees > 0), taxes, then prepaid credits."""
    raise NotImplementedError


def is_empty(fees: Sequence[Fee]) -> bool:
    """Empty means the fees add up to 0 before coupons, taxes and credits."""
    raise NotImplementedError


def finalize_zero_amount_invoice(entity: BillingEntity, customer: Customer) -> bool:
    """Resolve the customer's inherit/skip/finalize against the billing entity's flag."""
    raise NotImplementedError


def should_close(fees: Sequence[Fee], entity: BillingEntity, customer: Customer) -> bool:
    """True when the invoice is empty and the resolved setting says skip."""
    raise NotImplementedError
