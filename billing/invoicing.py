"""Invoice totals (fees -> coupons -> taxes -> credits) and the empty-invoice decision.

The order of the totals (docs/architecture.md, business rules), in cents::

    fees_amount_cents          sum of the fees (each rounded once, in billing.fees)
  - coupons_amount_cents       only at finalization and only when fees > 0; stop at zero
  = sub_total_excluding_taxes
  + taxes_amount_cents         rate x (each fee - its coupon share), summed, rounded once
  = sub_total_including_taxes
  - prepaid_credit_amount_cents   wallet balance, up to the sub-total including taxes
  = total_amount_cents         what the customer owes
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

from pydantic import BaseModel, ConfigDict

from billing.models import (
    AppliedCoupon,
    BillingEntity,
    CouponFrequency,
    CouponType,
    Customer,
    Fee,
    FinalizeZeroAmount,
)
from billing.money import minor_units, to_cents

__all__ = [
    "CouponConsumption",
    "Totals",
    "draft_number",
    "draft_totals",
    "final_number",
    "finalization_totals",
    "finalize_zero_amount_invoice",
    "invoice_id_for",
    "is_empty",
    "should_close",
    "tax_rate",
]

_INVOICE_NAMESPACE = uuid.UUID("0b7f8f0e-3c55-4f57-9a59-1c9a8f1d2e64")
NUMBER_DIGITS = 6


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


def invoice_id_for(subscription_external_id: str, period_start: datetime) -> str:
    """The invoice id of a (subscription, period): the same key always gives the same id."""
    key = f"{subscription_external_id}/{period_start.astimezone(UTC).isoformat()}"
    return str(uuid.uuid5(_INVOICE_NAMESPACE, key))


def draft_number(invoice_prefix: str) -> str:
    """The number a draft shows: final numbers are taken only at finalization."""
    return f"{invoice_prefix}-DRAFT"


def final_number(invoice_prefix: str, sequence: int) -> str:
    """``ACME-000042``: the billing entity's prefix and its gapless sequence number."""
    return f"{invoice_prefix}-{sequence:0{NUMBER_DIGITS}d}"


def tax_rate(customer: Customer, entity: BillingEntity) -> Decimal:
    """The customer's tax rate (percent), else the billing entity's."""
    return customer.tax_rate if customer.tax_rate is not None else entity.tax_rate


def draft_totals(fees: Sequence[Fee], tax_rate: Decimal, currency: str) -> Totals:
    """Totals shown on a draft: no coupons and no credits, taxes on the fees.

    Coupons and wallet credits are applied only at finalization, so a draft shows what
    the fees and their taxes come to; the fees' coupon and tax shares stay 0.
    """
    totals = _totals(fees, (), tax_rate, 0, currency)
    return totals.model_copy(update={"fees": tuple(fees)})


def finalization_totals(
    fees: Sequence[Fee],
    applied_coupons: Sequence[AppliedCoupon],
    tax_rate: Decimal,
    wallet_balance_cents: int,
    currency: str,
) -> Totals:
    """Totals at finalization: coupons (only when fees > 0), taxes, then prepaid credits.

    ``applied_coupons`` are used in the given order; each fee's ``coupons_amount_cents``,
    ``taxes_amount_cents`` and ``precise_taxes_amount`` are filled in. What each coupon
    gives is in ``coupon_consumptions`` for the caller to store.
    """
    fees_amount_cents = sum(fee.amount_cents for fee in fees)
    consumptions = _consume_coupons(applied_coupons, fees_amount_cents)
    return _totals(fees, consumptions, tax_rate, wallet_balance_cents, currency)


def is_empty(fees: Sequence[Fee]) -> bool:
    """Empty means the fees add up to 0 before coupons, taxes and credits.

    No fees at all, or only zero-amount fees (usage inside a free tier). An invoice
    brought to 0 by a coupon or by credits is not empty.
    """
    return sum(fee.amount_cents for fee in fees) == 0


def finalize_zero_amount_invoice(entity: BillingEntity, customer: Customer) -> bool:
    """Resolve the customer's inherit/skip/finalize against the billing entity's flag."""
    match customer.finalize_zero_amount_invoice:
        case FinalizeZeroAmount.FINALIZE:
            return True
        case FinalizeZeroAmount.SKIP:
            return False
        case FinalizeZeroAmount.INHERIT:
            return entity.finalize_zero_amount_invoice


def should_close(fees: Sequence[Fee], entity: BillingEntity, customer: Customer) -> bool:
    """True when the invoice is empty and the resolved setting says skip."""
    return is_empty(fees) and not finalize_zero_amount_invoice(entity, customer)


# --------------------------------------------------------------------------- totals


def _totals(
    fees: Sequence[Fee],
    consumptions: Sequence[CouponConsumption],
    rate: Decimal,
    wallet_balance_cents: int,
    currency: str,
) -> Totals:
    fees_amount_cents = sum(fee.amount_cents for fee in fees)
    coupons_amount_cents = sum(consumption.amount_cents for consumption in consumptions)

    # Each fee bears the coupons in proportion to its amount; its taxes apply to the rest.
    weights = [Decimal(fee.amount_cents) for fee in fees]
    precise_coupon_shares = [
        Decimal(coupons_amount_cents) * weight / fees_amount_cents
        if fees_amount_cents
        else Decimal(0)
        for weight in weights
    ]
    precise_taxes = [
        (Decimal(fee.amount_cents) - share).scaleb(-minor_units(currency)) * rate / 100
        for fee, share in zip(fees, precise_coupon_shares, strict=True)
    ]
    taxes_amount_cents = to_cents(sum(precise_taxes, Decimal(0)), currency)  # once per invoice

    sub_total_excluding_taxes = fees_amount_cents - coupons_amount_cents
    sub_total_including_taxes = sub_total_excluding_taxes + taxes_amount_cents
    credits = min(max(wallet_balance_cents, 0), sub_total_including_taxes)

    coupon_cents = _allocate(coupons_amount_cents, weights)
    tax_cents = _allocate(taxes_amount_cents, precise_taxes)
    shared_fees = tuple(
        fee.model_copy(
            update={
                "coupons_amount_cents": coupons,
                "taxes_amount_cents": taxes,
                "precise_taxes_amount": precise_tax,
            }
        )
        for fee, coupons, taxes, precise_tax in zip(
            fees, coupon_cents, tax_cents, precise_taxes, strict=True
        )
    )
    return Totals(
        fees=shared_fees,
        fees_amount_cents=fees_amount_cents,
        coupons_amount_cents=coupons_amount_cents,
        taxes_amount_cents=taxes_amount_cents,
        sub_total_excluding_taxes_amount_cents=sub_total_excluding_taxes,
        sub_total_including_taxes_amount_cents=sub_total_including_taxes,
        prepaid_credit_amount_cents=credits,
        total_amount_cents=sub_total_including_taxes - credits,
        coupon_consumptions=tuple(consumptions),
    )


def _allocate(total_cents: int, weights: Sequence[Decimal]) -> list[int]:
    """Split ``total_cents`` in proportion to ``weights`` so that the parts add up exactly.

    Largest remainder: every part is rounded down, then the cents left over go to the
    parts with the largest fractions (the earliest on a tie).
    """
    weight_sum = sum(weights, Decimal(0))
    if total_cents == 0 or weight_sum <= 0:
        return [0] * len(weights)
    exact = [Decimal(total_cents) * weight / weight_sum for weight in weights]
    parts = [int(value.to_integral_value(rounding=ROUND_FLOOR)) for value in exact]
    by_fraction = sorted(
        range(len(weights)), key=lambda index: (-(exact[index] - parts[index]), index)
    )
    for index in by_fraction[: total_cents - sum(parts)]:
        parts[index] += 1
    return parts


# --------------------------------------------------------------------------- coupons


def _consume_coupons(
    applied_coupons: Sequence[AppliedCoupon], fees_amount_cents: int
) -> list[CouponConsumption]:
    """What each coupon takes, in order, from what the previous ones left.

    Coupons apply only when there is something to discount, and stop at zero: once the
    invoice is fully discounted the remaining coupons are neither applied nor consumed.
    """
    consumptions: list[CouponConsumption] = []
    remaining = fees_amount_cents
    for coupon in applied_coupons:
        if remaining <= 0:
            break
        if not _usable(coupon):
            continue
        amount = min(_coupon_value(coupon, remaining), remaining)
        remaining -= amount
        consumptions.append(_consumption(coupon, amount))
    return consumptions


def _usable(coupon: AppliedCoupon) -> bool:
    if coupon.status == "terminated":
        return False
    if coupon.frequency == CouponFrequency.RECURRING and coupon.frequency_duration_remaining == 0:
        return False
    is_fixed_once = (
        coupon.coupon_type == CouponType.FIXED_AMOUNT and coupon.frequency == CouponFrequency.ONCE
    )
    return not (is_fixed_once and coupon.amount_cents_remaining == 0)


def _coupon_value(coupon: AppliedCoupon, remaining_cents: int) -> int:
    """What the coupon would give on ``remaining_cents`` (the amount after earlier coupons)."""
    if coupon.coupon_type == CouponType.PERCENTAGE:
        rate = coupon.percentage_rate or Decimal(0)
        discount = Decimal(remaining_cents) * rate / 100
        return int(discount.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return _fixed_amount_available(coupon)


def _fixed_amount_available(coupon: AppliedCoupon) -> int:
    """A fixed coupon's amount for one invoice; a once coupon carries its rest over."""
    if coupon.frequency == CouponFrequency.ONCE and coupon.amount_cents_remaining is not None:
        return coupon.amount_cents_remaining
    return coupon.amount_cents or 0


def _consumption(coupon: AppliedCoupon, amount_cents: int) -> CouponConsumption:
    """The coupon's new state after giving ``amount_cents`` to this invoice."""
    amount_remaining: int | None = None
    periods_remaining: int | None = None
    match coupon.frequency:
        case CouponFrequency.ONCE if coupon.coupon_type == CouponType.FIXED_AMOUNT:
            amount_remaining = _fixed_amount_available(coupon) - amount_cents
            terminated = amount_remaining == 0
        case CouponFrequency.ONCE:
            terminated = True  # a percentage applies to one invoice
        case CouponFrequency.RECURRING:
            # A recurring coupon without a count left is on its last period.
            periods_remaining = max((coupon.frequency_duration_remaining or 1) - 1, 0)
            terminated = periods_remaining == 0
        case CouponFrequency.FOREVER:
            terminated = False
    return CouponConsumption(
        applied_coupon_id=coupon.id,
        amount_cents=amount_cents,
        amount_cents_remaining=amount_remaining,
        frequency_duration_remaining=periods_remaining,
        terminated=terminated,
    )
