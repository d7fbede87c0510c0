"""What the operator reads in the CLI's tables about approvals, previews and timelines,
and who the CLI names as the actor of a change (no Temporal, no database)."""

from __future__ import annotations

import getpass
import io
from datetime import UTC, datetime

import pytest
from rich.console import Console

from billing.approval import ApprovalStatus, InvoiceApproval
from billing.models import Invoice, InvoicePreview, InvoiceStatus
from billing.timeline import TimelineEntry, TimelineKind
from starter.cli._common import default_actor
from starter.output import invoice_notes, invoice_table, invoices_table, timeline_table

DUE = datetime(2026, 2, 4, 5, 0, tzinfo=UTC)


def draft(**fields: object) -> Invoice:
    values: dict[str, object] = {
        "id": "inv_1",
        "number": "ACME-DRAFT",
        "status": InvoiceStatus.DRAFT,
        "currency": "USD",
        "customer_external_id": "cust",
        "subscription_external_id": "sub",
        "period_start": datetime(2026, 1, 1, 5, tzinfo=UTC),
        "period_end": datetime(2026, 2, 1, 5, tzinfo=UTC),
        "expected_finalization_at": DUE,
        "total_amount_cents": 12_300,
    }
    values.update(fields)
    return Invoice.model_validate(values)


def render(table: object) -> str:
    out = io.StringIO()
    Console(file=out, width=200).print(table)
    return out.getvalue()


def test_a_draft_shows_when_it_finalizes() -> None:
    assert invoice_notes(draft()) == ["expected finalization: 2026-02-04 05:00:00Z"]


def test_a_held_draft_shows_its_reasons_instead_of_a_deadline() -> None:
    held = draft(
        approval=InvoiceApproval(
            status=ApprovalStatus.REQUIRED, reasons=("total 12300 cents is above 10000 cents",)
        )
    )
    notes = invoice_notes(held)
    assert notes[0].startswith("approval: [bold]required")
    assert notes[1] == "  - total 12300 cents is above 10000 cents"
    assert not any("expected finalization" in note for note in notes)


def test_a_finalized_invoice_shows_who_approved_it() -> None:
    approved = draft(
        status=InvoiceStatus.FINALIZED,
        number="ACME-000001",
        expected_finalization_at=None,
        approval=InvoiceApproval(
            status=ApprovalStatus.APPROVED,
            approved_by="alice [ops]",
            approved_at=DUE,
            note="ok",
        ),
    )
    [note] = invoice_notes(approved)
    assert note == r"approval: approved by alice \[ops] at 2026-02-04 05:00:00Z (ok)"
    plain = draft(status=InvoiceStatus.FINALIZED, expected_finalization_at=None)
    plain = plain.model_copy(update={"approval": InvoiceApproval(status="not_required")})
    assert invoice_notes(plain) == ["approval: not required"]


def test_the_invoice_list_shows_which_invoices_wait_for_approval() -> None:
    held = draft(approval=InvoiceApproval(status=ApprovalStatus.REQUIRED, reasons=("always",)))
    text = render(invoices_table([held, draft(id="inv_2")]))
    assert "approval" in text and "required" in text


def test_a_preview_is_titled_as_one() -> None:
    values = draft().model_dump(exclude={"number", "status", "expected_finalization_at"})
    preview = InvoicePreview(**values, status=InvoiceStatus.CLOSED)
    assert "PREVIEW: closed if finalized now" in render(invoice_table(preview))


def test_the_timeline_table_lists_every_entry_readably() -> None:
    entries = [
        TimelineEntry(
            at=DUE,
            kind=TimelineKind.APPROVED,
            actor="alice",
            summary="approved: [checked]",
            total_amount_cents=-0,
        )
    ]
    text = render(timeline_table(entries, "USD"))
    assert "2026-02-04 05:00:00Z" in text and "approved" in text and "alice" in text
    assert "[checked]" in text and "0.00 USD" in text and "-0.00" not in text


def test_the_actor_is_billing_actor_else_the_os_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_ACTOR", "  ops-bot ")
    assert default_actor() == "ops-bot"
    monkeypatch.delenv("BILLING_ACTOR")
    monkeypatch.setattr(getpass, "getuser", lambda: "dana")
    assert default_actor() == "dana"

    def no_user() -> str:
        raise OSError("no user name")

    monkeypatch.setattr(getpass, "getuser", no_user)
    assert default_actor() is None  # the payload then names nobody; the timeline says system
