"""Decimals in the domain models' JSON: fixed-point digits, the same value, no ``-0``."""

from __future__ import annotations

import json
from decimal import Decimal

from hypothesis import given, settings

from billing.decimals import plain_decimal
from billing.models import AdjustedFee, AdjustmentMode, Invoice
from tests.fixtures.decimals import (
    EXPONENT,
    NEGATIVE_ZERO,
    FeeValues,
    awkward_decimals,
    awkward_fee_values,
    awkward_invoice,
    unreadable_numbers,
)

non_negative = awkward_decimals.map(lambda value: value.copy_abs())


@settings(deadline=None)  # a shared, loaded machine: no per-example deadline
@given(awkward_decimals)
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


@settings(deadline=None)  # a shared, loaded machine: no per-example deadline
@given(awkward_fee_values)
def test_invoice_json_has_no_exponent_and_reads_back_the_same(
    fee_values: list[FeeValues],
) -> None:
    invoice = awkward_invoice(fee_values)
    for text in (invoice.model_dump_json(), json.dumps(invoice.model_dump(mode="json"))):
        assert unreadable_numbers(text) == []
        assert Invoice.model_validate_json(text) == invoice  # Decimal equality: same values


@settings(deadline=None)  # a shared, loaded machine: no per-example deadline
@given(non_negative, non_negative)
def test_adjusted_fee_json_has_no_exponent(units: Decimal, unit_amount: Decimal) -> None:
    adjustment = AdjustedFee(
        charge_code="storage", mode=AdjustmentMode.AMOUNT, units=units, unit_amount=unit_amount
    )
    assert unreadable_numbers(adjustment.model_dump_json()) == []


def test_json_written_in_exponent_form_still_reads() -> None:
    """Payloads and webhook bodies written before fixed-point (``"0E-25"``) still decode."""
    invoice = awkward_invoice([(Decimal("1E+3"), Decimal("1E-13"), Decimal("0"), Decimal("0E-25"))])
    old = json.loads(invoice.model_dump_json())
    old["fees"][0].update(units="1E+3", precise_amount="1E-13", precise_taxes_amount="0E-25")
    read = Invoice.model_validate(old)
    assert read.fees[0].precise_taxes_amount == 0
    assert read.fees[0].units == 1000
    assert read.fees[0].precise_amount == Decimal("0.0000000000001")


def test_python_dumps_keep_the_decimal() -> None:
    """The store writes rows from Python dumps: their decimals keep every digit and scale."""
    fee = awkward_invoice(
        [(Decimal("2.50"), Decimal("1E-13"), Decimal("0"), Decimal("0E-25"))]
    ).fees[0]
    dumped = fee.model_dump()
    assert isinstance(dumped["units"], Decimal) and str(dumped["units"]) == "2.50"
    assert str(dumped["precise_taxes_amount"]) == "0E-25"
