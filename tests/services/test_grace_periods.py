"""Grace periods that follow their settings: a changed ``grace_period_days`` moves the
deadline of every running draft it governs, counted from the moment it was drafted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from billing.models import Invoice, InvoiceStatus
from billing.timeline import TimelineKind
from services.catalog import load_catalog
from services.finalization import finalize_invoice
from services.grace_periods import drafts_to_follow_settings, recompute_grace_period
from services.invoices import create_draft, get_invoice
from services.timeline import invoice_timeline
from tests.services.support import entry, example_catalog, january

NORTHWIND = "sub_northwind_growth"  # acme_us: 3 days, Northwind sets none of its own
KOALA = "sub_koala_payments"  # acme_us, but Koala's own grace period: 1 day; empty: closed
SAKURA = "sub_sakura_starter"  # acme_us, 3 days
DRAFTED_AT = datetime(2026, 2, 1, 5, tzinfo=UTC)
DAY = timedelta(days=1)


def _acme_us(engine: Engine, **settings: Any) -> None:
    """Load the example catalog with ``settings`` on the billing entity acme_us."""
    catalog = example_catalog()
    entry(catalog, "billing_entities", "code", "acme_us").update(settings)
    load_catalog(engine, catalog)


def _draft(engine: Engine, subscription: str = NORTHWIND, **kwargs: Any) -> Invoice:
    timezone = "Australia/Sydney" if subscription == KOALA else "America/New_York"
    return create_draft(engine, subscription, *january(timezone), drafted_at=DRAFTED_AT, **kwargs)


def _grace_changes(engine: Engine, invoice_id: str) -> list[str]:
    return [
        e.actor
        for e in invoice_timeline(engine, invoice_id)
        if e.kind == TimelineKind.GRACE_PERIOD_CHANGED
    ]


def test_a_running_draft_follows_a_shorter_then_a_longer_grace_period(
    catalog_engine: Engine,
) -> None:
    draft = _draft(catalog_engine)
    koala = _draft(catalog_engine, KOALA)
    assert draft.expected_finalization_at == DRAFTED_AT + 3 * DAY
    assert koala.expected_finalization_at == DRAFTED_AT + DAY
    assert drafts_to_follow_settings(catalog_engine) == []

    _acme_us(catalog_engine, grace_period_days=1)
    (follow,) = drafts_to_follow_settings(catalog_engine)  # Koala keeps its own setting
    assert (follow.invoice_id, follow.expected_finalization_at, follow.follows_at) == (
        draft.id,
        DRAFTED_AT + 3 * DAY,
        DRAFTED_AT + DAY,
    )
    moved = recompute_grace_period(catalog_engine, draft.id, actor="ops")
    assert moved.expected_finalization_at == DRAFTED_AT + DAY  # from drafted_at, not now
    assert get_invoice(catalog_engine, draft.id) == moved
    assert drafts_to_follow_settings(catalog_engine) == []
    # Following again changes and records nothing.
    assert recompute_grace_period(catalog_engine, draft.id) == moved
    assert _grace_changes(catalog_engine, draft.id) == ["ops"]

    _acme_us(catalog_engine, grace_period_days=10)
    longer = recompute_grace_period(catalog_engine, draft.id, key="grace-2")
    assert longer.expected_finalization_at == DRAFTED_AT + 10 * DAY
    assert recompute_grace_period(catalog_engine, draft.id, key="grace-2") == longer
    assert _grace_changes(catalog_engine, draft.id) == ["ops", "system"]
    assert get_invoice(catalog_engine, koala.id) == koala


def test_a_fixed_grace_period_does_not_follow(catalog_engine: Engine) -> None:
    draft = _draft(catalog_engine, grace_period_seconds=3600)
    assert draft.expected_finalization_at == DRAFTED_AT + timedelta(hours=1)
    _acme_us(catalog_engine, grace_period_days=1)
    assert drafts_to_follow_settings(catalog_engine) == []
    assert recompute_grace_period(catalog_engine, draft.id) == draft
    assert _grace_changes(catalog_engine, draft.id) == []


def test_held_finalized_and_closed_invoices_are_left_alone(catalog_engine: Engine) -> None:
    finalized = finalize_invoice(catalog_engine, _draft(catalog_engine).id, DRAFTED_AT).invoice
    closed = finalize_invoice(catalog_engine, _draft(catalog_engine, KOALA).id, DRAFTED_AT).invoice
    assert (finalized.status, closed.status) == (InvoiceStatus.FINALIZED, InvoiceStatus.CLOSED)
    _acme_us(catalog_engine, approval={"always": True})
    sakura = create_draft(catalog_engine, SAKURA, *january("Asia/Tokyo"), drafted_at=DRAFTED_AT)
    held = finalize_invoice(catalog_engine, sakura.id, DRAFTED_AT).invoice
    assert held.awaiting_approval and held.expected_finalization_at == DRAFTED_AT + 3 * DAY

    _acme_us(catalog_engine, approval={"always": True}, grace_period_days=1)
    assert drafts_to_follow_settings(catalog_engine) == []
    for invoice in (held, finalized, closed):
        assert recompute_grace_period(catalog_engine, invoice.id) == invoice
        assert _grace_changes(catalog_engine, invoice.id) == []
