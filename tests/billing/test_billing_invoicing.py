"""Invoice totals: coupons, taxes, prepaid credits, and the empty-invoice decision."""

from decimal import Decimal
from typing import Any

import pytest

from billing.invoicing import (
    CouponConsumption,
    draft_totals,
    finalization_totals,
    finalize_zero_amount_invoice,
    is_empty,
    should_close,
    tax_rate,
)
from billing.models import (
    AppliedCoupon,
    BillingEntity,
    CouponFrequency,
    CouponType,
    Customer,
    Fee,
    FeeKind,
    FinalizeZeroAmount,
)


def fee(code: str, cents: int) -> Fee:
    return Fee(
        code=code,
        kind=FeeKind.CHARGE,
        display_name=code,
        units=Decimal(1),
        amount_cents=cents,
        precise_amount=Decimal(cents) / 100,
    )


def fixed(cid: str, cents: int, frequency: str = "once", **extra: Any) -> AppliedCoupon:
    return AppliedCoupon(
        id=cid,
        coupon_code=cid,
        customer_external_id="c1",
        coupon_type=CouponType.FIXED_AMOUNT,
        amount_cents=cents,
        frequency=CouponFrequency(frequency),
        **extra,
    )


def percent(cid: str, rate: str, frequency: str = "once", **extra: Any) -> AppliedCoupon:
    return AppliedCoupon(
        id=cid,
        coupon_code=cid,
        customer_external_id="c1",
        coupon_type=CouponType.PERCENTAGE,
        percentage_rate=Decimal(rate),
        frequency=CouponFrequency(frequency),
        **extra,
    )


ENTITY = BillingEntity(code="acme", name="Acme", invoice_prefix="ACM", tax_rate=Decimal("20"))
CUSTOMER = Customer(external_id="c1", billing_entity_code="acme")


# --------------------------------------------------------------------------- taxes


def test_tax_rate_customer_else_entity() -> None:
    assert tax_rate(CUSTOMER, ENTITY) == Decimal("20")
    assert tax_rate(CUSTOMER.model_copy(update={"tax_rate": Decimal("5.5")}), ENTITY) == Decimal(
        "5.5"
    )
    assert tax_rate(CUSTOMER.model_copy(update={"tax_rate": Decimal(0)}), ENTITY) == 0


def test_draft_totals_round_taxes_once_per_invoice() -> None:
    # 3 fees of 5 cents at 10%: 0.5 + 0.5 + 0.5 = 1.5 -> 2 cents (3 if rounded per fee).
    totals = draft_totals([fee("a", 5), fee("b", 5), fee("c", 5)], Decimal("10"), "USD")
    assert totals.fees_amount_cents == 15
    assert totals.taxes_amount_cents == 2
    assert totals.total_amount_cents == 17
    assert totals.sub_total_excluding_taxes_amount_cents == 15
    assert totals.sub_total_including_taxes_amount_cents == 17
    assert (totals.coupons_amount_cents, totals.prepaid_credit_amount_cents) == (0, 0)
    assert [f.taxes_amount_cents for f in totals.fees] == [0, 0, 0]  # shares: finalization


def test_finalization_without_coupons_or_credits() -> None:
    totals = finalization_totals([fee("a", 1000), fee("b", 250)], [], Decimal("20"), 0, "USD")
    assert (totals.fees_amount_cents, totals.taxes_amount_cents, totals.total_amount_cents) == (
        1250,
        250,
        1500,
    )
    assert [f.taxes_amount_cents for f in totals.fees] == [200, 50]
    assert totals.coupon_consumptions == ()


def test_fee_tax_shares_add_up_to_the_invoice_tax() -> None:
    totals = finalization_totals(
        [fee("a", 5), fee("b", 5), fee("c", 5)], [], Decimal("10"), 0, "USD"
    )
    assert totals.taxes_amount_cents == 2
    assert sum(f.taxes_amount_cents for f in totals.fees) == 2
    assert [f.precise_taxes_amount for f in totals.fees] == [Decimal("0.005")] * 3


# --------------------------------------------------------------------------- coupons


def test_coupons_come_before_taxes_and_taxes_apply_after_each_fees_coupon_share() -> None:
    # 100.00 + 50.00, coupon 30.00: shares 20.00 and 10.00; taxes 20% of 120.00 = 24.00.
    totals = finalization_totals(
        [fee("a", 10000), fee("b", 5000)], [fixed("c1", 3000)], Decimal("20"), 0, "USD"
    )
    assert totals.coupons_amount_cents == 3000
    assert [f.coupons_amount_cents for f in totals.fees] == [2000, 1000]
    assert [f.taxes_amount_cents for f in totals.fees] == [1600, 800]
    assert totals.taxes_amount_cents == 2400
    assert totals.sub_total_excluding_taxes_amount_cents == 12000
    assert totals.sub_total_including_taxes_amount_cents == 14400
    assert totals.total_amount_cents == 14400


def test_fixed_once_coupon_carries_its_rest_over_until_exhausted() -> None:
    coupon = fixed("c1", 5000)
    first = finalization_totals([fee("a", 3000)], [coupon], Decimal(0), 0, "USD")
    assert first.coupon_consumptions == (
        CouponConsumption(
            applied_coupon_id="c1",
            amount_cents=3000,
            amount_cents_remaining=2000,
            frequency_duration_remaining=None,
            terminated=False,
        ),
    )
    assert first.total_amount_cents == 0

    carried = coupon.model_copy(update={"amount_cents_remaining": 2000})
    second = finalization_totals([fee("a", 3000)], [carried], Decimal(0), 0, "USD")
    assert second.coupons_amount_cents == 2000
    assert second.total_amount_cents == 1000
    (consumption,) = second.coupon_consumptions
    assert (consumption.amount_cents_remaining, consumption.terminated) == (0, True)


def test_recurring_coupon_counts_down_and_terminates() -> None:
    coupon = fixed("r", 500, "recurring", frequency_duration_remaining=2)
    (first,) = finalization_totals([fee("a", 3000)], [coupon], 0, 0, "USD").coupon_consumptions
    assert (first.amount_cents, first.frequency_duration_remaining, first.terminated) == (
        500,
        1,
        False,
    )
    last = coupon.model_copy(update={"frequency_duration_remaining": 1})
    (second,) = finalization_totals([fee("a", 300)], [last], 0, 0, "USD").coupon_consumptions
    # Capped at the invoice amount; the rest of a recurring coupon does not carry over.
    assert (second.amount_cents, second.frequency_duration_remaining, second.terminated) == (
        300,
        0,
        True,
    )


def test_exhausted_or_terminated_coupons_are_not_applied() -> None:
    coupons = [
        fixed("r", 500, "recurring", frequency_duration_remaining=0),
        fixed("o", 500, amount_cents_remaining=0),
        fixed("t", 500, status="terminated"),
    ]
    totals = finalization_totals([fee("a", 3000)], coupons, 0, 0, "USD")
    assert (totals.coupons_amount_cents, totals.coupon_consumptions) == (0, ())


def test_forever_coupon_never_terminates() -> None:
    (consumption,) = finalization_totals(
        [fee("a", 3000)], [percent("f", "10", "forever")], 0, 0, "USD"
    ).coupon_consumptions
    assert (consumption.amount_cents, consumption.terminated) == (300, False)


def test_percentage_once_coupon() -> None:
    totals = finalization_totals([fee("a", 1999)], [percent("p", "25")], Decimal(0), 0, "USD")
    (consumption,) = totals.coupon_consumptions
    assert (consumption.amount_cents, consumption.terminated) == (500, True)  # 499.75 -> 500
    assert totals.total_amount_cents == 1499


def test_coupons_apply_in_the_given_order() -> None:
    fees = [fee("a", 10000)]
    fixed_first = finalization_totals(fees, [fixed("f", 2000), percent("p", "10")], 0, 0, "USD")
    percent_first = finalization_totals(fees, [percent("p", "10"), fixed("f", 2000)], 0, 0, "USD")
    # A percentage applies to what the earlier coupons left.
    assert [c.amount_cents for c in fixed_first.coupon_consumptions] == [2000, 800]
    assert [c.amount_cents for c in percent_first.coupon_consumptions] == [1000, 2000]
    assert fixed_first.total_amount_cents == 7200
    assert percent_first.total_amount_cents == 7000


def test_coupon_bigger_than_the_invoice_stops_at_zero() -> None:
    coupons = [fixed("big", 50000), fixed("next", 1000), percent("p", "50")]
    totals = finalization_totals([fee("a", 12000)], coupons, Decimal("20"), 0, "USD")
    assert totals.coupons_amount_cents == 12000
    assert (totals.taxes_amount_cents, totals.total_amount_cents) == (0, 0)
    # Only the first coupon is consumed; the others are left for later invoices.
    assert [(c.applied_coupon_id, c.amount_cents) for c in totals.coupon_consumptions] == [
        ("big", 12000)
    ]
    assert totals.coupon_consumptions[0].amount_cents_remaining == 38000


def test_no_coupon_when_fees_are_zero() -> None:
    totals = finalization_totals([fee("a", 0)], [fixed("c", 1000)], Decimal(0), 0, "USD")
    assert (totals.coupons_amount_cents, totals.coupon_consumptions) == (0, ())


# --------------------------------------------------------------------------- credits


@pytest.mark.parametrize(
    ("wallet", "credits", "total"),
    [
        (0, 0, 1200),
        (500, 500, 700),  # partial
        (1200, 1200, 0),  # exactly the total
        (99999, 1200, 0),  # more than the total: up to the total
    ],
)
def test_prepaid_credits_after_taxes(wallet: int, credits: int, total: int) -> None:
    totals = finalization_totals([fee("a", 1000)], [], Decimal("20"), wallet, "USD")
    assert totals.sub_total_including_taxes_amount_cents == 1200
    assert (totals.prepaid_credit_amount_cents, totals.total_amount_cents) == (credits, total)


def test_full_order_fees_coupons_taxes_credits() -> None:
    totals = finalization_totals(
        [fee("a", 8000), fee("b", 2000)], [percent("p", "10")], Decimal("10"), 900, "USD"
    )
    # 100.00 - 10.00 = 90.00; tax 9.00 -> 99.00; credits 9.00 -> 90.00.
    assert (
        totals.fees_amount_cents,
        totals.coupons_amount_cents,
        totals.taxes_amount_cents,
        totals.prepaid_credit_amount_cents,
        totals.total_amount_cents,
    ) == (10000, 1000, 900, 900, 9000)


# --------------------------------------------------------------------------- empty invoices


def test_is_empty() -> None:
    assert is_empty([]) is True
    assert is_empty([fee("free-tier", 0), fee("other", 0)]) is True
    assert is_empty([fee("free-tier", 0), fee("paid", 1)]) is False


@pytest.mark.parametrize(
    ("entity_flag", "customer_setting", "finalize"),
    [
        (True, "inherit", True),
        (False, "inherit", False),
        (True, "skip", False),
        (False, "skip", False),
        (True, "finalize", True),
        (False, "finalize", True),
    ],
)
def test_empty_invoice_matrix(entity_flag: bool, customer_setting: str, finalize: bool) -> None:
    entity = ENTITY.model_copy(update={"finalize_zero_amount_invoice": entity_flag})
    customer = CUSTOMER.model_copy(
        update={"finalize_zero_amount_invoice": FinalizeZeroAmount(customer_setting)}
    )
    assert finalize_zero_amount_invoice(entity, customer) is finalize
    assert should_close([], entity, customer) is (not finalize)
    assert should_close([fee("free-tier", 0)], entity, customer) is (not finalize)
    assert should_close([fee("paid", 100)], entity, customer) is False


def test_invoice_brought_to_zero_by_a_coupon_is_not_empty() -> None:
    skip = CUSTOMER.model_copy(update={"finalize_zero_amount_invoice": FinalizeZeroAmount.SKIP})
    fees = [fee("paid", 1000)]
    totals = finalization_totals(fees, [fixed("c", 1000)], Decimal(0), 0, "USD")
    assert totals.total_amount_cents == 0
    assert is_empty(fees) is False
    assert should_close(fees, ENTITY, skip) is False


def test_entity_default_finalizes_empty_invoices() -> None:
    assert BillingEntity(code="x", name="X", invoice_prefix="X").finalize_zero_amount_invoice
    assert finalize_zero_amount_invoice(ENTITY, CUSTOMER) is True
