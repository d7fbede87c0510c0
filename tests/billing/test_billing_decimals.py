"""Decimals in the domain models' JSON: fixed-point digits, the same value, no ``-0``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from billing.decimals import plain_decimal
from billing.models import AdjustedFee, AdjustmentMode, Fee, FeeKind, Invoice, InvoiceStatus
from tests.fixtures.json_numbers import EXPONENT, NEGATIVE_ZERO, unreadable_numbers

# Every sign, 1 to 30 digits (zeros included) and exponents far past where str() switches
# to exponent form: 0E-25, -0, -0.004, 1E+30, ...
decimals = st.builds(
    lambda sign, digits, exponent: Decimal((sign, digits, exponent)),
    st.sampled_from([0, 1]),
    st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=30).map(tuple),
    st.integers(min_value=-40, max_value=40),
)
non_negative = decimals.map(lambda value: value.copy_abs())


def invoice_with(fee_values: list[tuple[Decimal, Decimal, Decimal, Decimal]]) -> Invoice:
    return Invoice(
        id="inv",
        number="ACME-000001",
        status=InvoiceStatus.FINALIZED,
        currency="USD",
        customer_external_id="cust",
        subscription_external_id="sub",
        period_start=datetime(2026, 1, 1, tzinfo=UTC),
        period_end=datetime(2026, 2, 1, tzinfo=UTC),
        fees=tuple(
            Fee(
                code=f"charge_{i}",
                kind=FeeKind.CHARGE,
                display_name=f"Charge {i}",
                units=units,
                amount_cents=0,
                precise_amount=precise,
                unit_amount=unit,
                precise_taxes_amount=taxes,
            )
            for i, (units, precise, unit, taxes) in enumerate(fee_values)
        ),
        tax_rate=Decimal("0E-3"),
    )


@given(decimals)
def test_plain_decimal_is_fixed_point_and_the_same_value(value: Decimal) -> None:
    text = plain_decimal(value)
    assert not EXPONENT.search(text)
    assert not NEGATIVE_ZERO.fullmatch(text)
    assert Decimal(text) == value
    if value.is_zero():
        assert text == "0"


def test_plain_decimal_examples() -> None:
    cases = {
        "0E-25": "0",
        "-0": "0",
        "-0.00": "0",
        "-0.004": "-0.004",
        "1E+3": "1000",
        "12.50": "12.50",  # a non-zero value keeps its digits as written
        "1E-13": "0.0000000000001",
    }
    assert {text: plain_decimal(Decimal(text)) for text in cases} == cases


@given(st.lists(st.tuples(decimals, decimals, decimals, decimals), max_size=4))
def test_invoice_json_has_no_exponent_and_reads_back_the_same(
    fee_values: list[tuple[Decimal, Decimal, Decimal, Decimal]],
) -> None:
    invoice = invoice_with(fee_values)
    for text in (invoice.model_dump_json(), json.dumps(invoice.model_dump(mode="json"))):
        assert unreadable_numbers(text) == []
        assert Invoice.model_validate_json(text) == invoice  # Decimal equality: same values


@given(non_negative, non_negative)
def test_adjusted_fee_json_has_no_exponent(units: Decimal, unit_amount: Decimal) -> None:
    adjustment = AdjustedFee(
        charge_code="storage", mode=AdjustmentMode.AMOUNT, units=units, unit_amount=unit_amount
    )
    assert unreadable_numbers(adjustment.model_dump_json()) == []


def test_json_written_in_exponent_form_still_reads() -> None:
    """Payloads and webhook bodies written before fixed-point (``"0E-25"``) still decode."""
    invoice = invoice_with([(Decimal("1E+3"), Decimal("1E-13"), Decimal("0"), Decimal("0E-25"))])
    old = json.loads(invoice.model_dump_json())
    old["fees"][0].update(units="1E+3", precise_amount="1E-13", precise_taxes_amount="0E-25")
    read = Invoice.model_validate(old)
    assert read.fees[0].precise_taxes_amount == 0
    assert read.fees[0].units == 1000
    assert read.fees[0].precise_amount == Decimal("0.0000000000001")


def test_python_dumps_keep_the_decimal() -> None:
    """The store writes rows from Python dumps: their decimals keep every digit and scale."""
    fee = invoice_with([(Decimal("2.50"), Decimal("1E-13"), Decimal("0"), Decimal("0E-25"))]).fees[
        0
    ]
    dumped = fee.model_dump()
    assert isinstance(dumped["units"], Decimal) and str(dumped["units"]) == "2.50"
    assert str(dumped["precise_taxes_amount"]) == "0E-25"
