"""The preview of the final invoice: exactly what finalization would make, with nothing
written, consumed or numbered."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from billing.approval import ApprovalStatus
from billing.errors import InvoiceNotEditable
from billing.models import AdjustedFee, AdjustmentMode, Invoice, InvoicePreview, InvoiceStatus
from services.coupons import get_wallet, list_applied_coupons, top_up_wallet
from services.finalization import finalize_invoice, preview_invoice
from services.invoices import adjust_fee, create_draft, get_invoice
from services.timeline import invoice_timeline
from services.webhooks import list_deliveries
from tests.services.support import january

BRANDT = "sub_brandt_team"  # acme_eu: 19% tax; a 10% coupon; $99 plan
KOALA_PAYG = "sub_koala_payg"  # usage only, the customer says skip empty invoices
ISSUED_AT = datetime(2026, 2, 6, 5, tzinfo=UTC)

TOTALS = (
    "fees_amount_cents",
    "coupons_amount_cents",
    "taxes_amount_cents",
    "sub_total_excluding_taxes_amount_cents",
    "sub_total_including_taxes_amount_cents",
    "prepaid_credit_amount_cents",
    "total_amount_cents",
    "tax_rate",
)


def _totals(invoice: Invoice) -> dict[str, object]:
    return {name: getattr(invoice, name) for name in TOTALS}


def _brandt_draft(engine: Engine) -> Invoice:
    """Brandt's January draft with a coupon, a 19% tax, prepaid credits and an edit priced
    in fractions of a cent (7 x 0.333 EUR)."""
    draft = create_draft(engine, BRANDT, *january("Europe/Berlin"))
    top_up_wallet(
        engine, customer_external_id="cust_brandt", amount_cents=2_500, transaction_id="t"
    )
    edit = AdjustedFee(
        charge_code="seats",
        mode=AdjustmentMode.AMOUNT,
        units=Decimal(7),
        unit_amount=Decimal("0.333"),
    )
    return adjust_fee(engine, draft.id, edit).invoice


def test_a_finalization_after_a_preview_matches_it_to_the_cent(catalog_engine: Engine) -> None:
    draft = _brandt_draft(catalog_engine)
    preview = preview_invoice(catalog_engine, draft.id, at=ISSUED_AT)
    assert isinstance(preview, InvoicePreview) and preview.preview is True
    assert (preview.number, preview.status) == (None, InvoiceStatus.FINALIZED)
    assert preview.issuing_date == ISSUED_AT and preview.expected_finalization_at is None
    assert preview.approval is not None and preview.approval.status == ApprovalStatus.NOT_REQUIRED
    # Coupon, tax and credits all apply: 9,900 + 233 fees, 10% off, 19% on the rest.
    assert preview.fees_amount_cents == 10_133
    assert preview.coupons_amount_cents == 1_013
    assert preview.taxes_amount_cents == 1_733
    assert preview.prepaid_credit_amount_cents == 2_500
    assert preview.total_amount_cents == 10_133 - 1_013 + 1_733 - 2_500

    final = finalize_invoice(catalog_engine, draft.id, ISSUED_AT).invoice
    assert _totals(final) == _totals(preview)
    assert final.fees == preview.fees  # per fee: coupon share, tax, precise amounts
    assert get_invoice(catalog_engine, draft.id).fees == preview.fees
    # Everything else too: dates, tax rate, currency, the empty grace period end.
    same = set(Invoice.model_fields) - {"number", "status", "approval"}
    assert preview.model_dump(include=same) == final.model_dump(include=same)


def test_a_preview_consumes_nothing_and_changes_nothing(catalog_engine: Engine) -> None:
    draft = _brandt_draft(catalog_engine)
    timeline = invoice_timeline(catalog_engine, draft.id)
    deliveries = list_deliveries(catalog_engine, invoice_id=draft.id)
    coupons = list_applied_coupons(catalog_engine, "cust_brandt")

    for _ in range(2):
        preview_invoice(catalog_engine, draft.id)

    assert get_invoice(catalog_engine, draft.id) == draft  # still the draft, as it was
    assert get_wallet(catalog_engine, "cust_brandt").balance_cents == 2_500
    assert list_applied_coupons(catalog_engine, "cust_brandt") == coupons
    assert list_deliveries(catalog_engine, invoice_id=draft.id) == deliveries
    assert invoice_timeline(catalog_engine, draft.id) == timeline
    # No number was taken: the finalization gets the entity's first.
    assert finalize_invoice(catalog_engine, draft.id, ISSUED_AT).invoice.number == "ACMEEU-000001"


def test_an_empty_invoice_previews_as_closed(catalog_engine: Engine) -> None:
    draft = create_draft(catalog_engine, KOALA_PAYG, *january("Australia/Sydney"))
    preview = preview_invoice(catalog_engine, draft.id, at=ISSUED_AT)
    assert (preview.status, preview.number, preview.total_amount_cents) == (
        InvoiceStatus.CLOSED,
        None,
        0,
    )
    final = finalize_invoice(catalog_engine, draft.id, ISSUED_AT).invoice
    assert final.status == InvoiceStatus.CLOSED and _totals(final) == _totals(preview)
    with pytest.raises(InvoiceNotEditable):  # a closed invoice is what it is
        preview_invoice(catalog_engine, draft.id)


def test_an_edit_previews_from_its_own_transaction(catalog_engine: Engine) -> None:
    draft = create_draft(catalog_engine, BRANDT, *january("Europe/Berlin"))
    edit = AdjustedFee(charge_code="seats", mode=AdjustmentMode.UNITS, units=Decimal(2))
    change = adjust_fee(catalog_engine, draft.id, edit, preview=True)
    assert change.preview is not None and change.invoice.fees_amount_cents == 9_900 + 2_400
    assert adjust_fee(catalog_engine, draft.id, edit).preview is None  # asked for none
    alone = preview_invoice(catalog_engine, draft.id, at=change.preview.issuing_date)
    assert alone == change.preview
