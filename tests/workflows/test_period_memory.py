"""What a cached period keeps in memory shrinks, what it reads does not change
(bench/README.md, "What a cached period holds")."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from billing.models import Invoice, InvoicePreview
from workflows.inbox import KEPT_REJECTIONS, Inbox
from workflows.messages import BillingPeriodInput, RejectedInput
from workflows.period_state import PeriodState

JANUARY = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))


def _invoice(invoice_id: str) -> Invoice:
    fee = {"code": "api", "kind": "charge", "display_name": "API", "units": "3"}
    payload = {
        "id": invoice_id,
        "number": "",
        "status": "draft",
        "currency": "EUR",
        "customer_external_id": "c",
        "subscription_external_id": "s",
        "period_start": JANUARY[0].isoformat(),
        "period_end": JANUARY[1].isoformat(),
        "fees": [{**fee, "amount_cents": 300, "precise_amount": "3"}],
    }
    return Invoice.model_validate_json(Invoice.model_validate(payload).model_dump_json())


def test_the_invoices_of_two_periods_share_their_field_sets() -> None:
    first = PeriodState(
        BillingPeriodInput(
            subscription_external_id="a", period_start=JANUARY[0], period_end=JANUARY[1]
        )
    )
    second = PeriodState(
        BillingPeriodInput(
            subscription_external_id="b", period_start=JANUARY[0], period_end=JANUARY[1]
        )
    )
    invoice = _invoice("inv_1")
    fields = set(invoice.model_fields_set)
    dumped = invoice.model_dump_json(exclude_unset=True)

    first.invoice, second.invoice = invoice, _invoice("inv_2")

    assert first.invoice is invoice and invoice.model_fields_set == fields
    assert invoice.model_fields_set is second.invoice.model_fields_set
    assert invoice.fees[0].model_fields_set is second.invoice.fees[0].model_fields_set
    assert first.input.model_fields_set is second.input.model_fields_set
    # Nothing read from the invoice changes, its unset fields included.
    assert invoice.model_dump_json(exclude_unset=True) == dumped
    copy = invoice.model_copy(update={"number": "INV-1"})
    assert "number" in copy.model_fields_set and invoice.model_fields_set == fields


def test_a_model_that_is_not_frozen_keeps_its_own_field_set() -> None:
    class Loose(BaseModel):
        note: str = ""

    state = PeriodState(
        BillingPeriodInput(
            subscription_external_id="a", period_start=JANUARY[0], period_end=JANUARY[1]
        )
    )
    loose = Loose(note="x")
    own = loose.model_fields_set

    state.settings = loose  # type: ignore[assignment]

    assert loose.model_fields_set is own


def test_an_inbox_keeps_the_latest_rejections_and_none_until_the_first() -> None:
    rejected = [
        RejectedInput(kind="k", reason=str(i), received_at=JANUARY[0], payload_excerpt="")
        for i in range(KEPT_REJECTIONS + 5)
    ]

    assert list(Inbox("s").rejections) == []
    kept = Inbox("s", rejections=rejected).rejections
    assert [r.reason for r in kept] == [str(i) for i in range(5, KEPT_REJECTIONS + 5)]


def test_the_preview_is_kept_as_its_json_and_reads_back_the_same() -> None:
    invoice = _invoice("inv-preview")
    preview = InvoicePreview.model_validate(
        {**invoice.model_dump(), "total_amount_cents": 357, "tax_rate": "0.19"}
    )
    state = PeriodState(
        BillingPeriodInput(
            subscription_external_id="p", period_start=JANUARY[0], period_end=JANUARY[1]
        )
    )
    assert state.preview is None
    state.preview = preview
    assert isinstance(state.preview_json, bytes)  # no models kept while the period waits
    assert state.preview == preview
    assert state.preview.model_dump_json() == preview.model_dump_json()
    state.preview = None
    assert state.preview is None and state.preview_json is None
