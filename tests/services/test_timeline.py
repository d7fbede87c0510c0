"""The invoice timeline as the services write it: keys, order, actors, totals after."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Engine, text

from billing.models import AdjustedFee, AdjustmentMode, InvoiceStatus
from billing.timeline import SYSTEM_ACTOR, TimelineKind
from services.catalog import load_catalog
from services.finalization import Approval, finalize_invoice
from services.grace_periods import recompute_grace_period
from services.invoices import adjust_fee, create_draft, refresh_draft, remove_fee_adjustment
from services.rejections import record_rejected_input
from services.timeline import invoice_timeline
from services.usage import record_usage
from store.timeline import KEY_LIMIT, stored_key
from tests.services.support import entry, event, example_catalog, january

NORTHWIND = "sub_northwind_growth"  # $299 plan, a $50 coupon, $100 of credits
KOALA_PAYG = "sub_koala_payg"  # usage only, the customer says skip empty invoices
DRAFTED_AT = datetime(2026, 2, 1, 5, tzinfo=UTC)
ISSUED_AT = datetime(2026, 2, 4, 5, tzinfo=UTC)


def _units(units: int) -> AdjustedFee:
    return AdjustedFee(charge_code="api_calls", mode=AdjustmentMode.UNITS, units=Decimal(units))


def test_stored_keys_fit_the_column_and_keep_long_keys_apart() -> None:
    assert stored_key("short/key") == "short/key"
    exact = "k" * KEY_LIMIT
    assert stored_key(exact) == exact
    first, second = "s" * 400 + "/step-1", "s" * 400 + "/step-2"
    assert len(stored_key(first)) == len(stored_key(second)) == KEY_LIMIT
    assert stored_key(first) != stored_key(second)
    assert stored_key(first) == stored_key(first)


def test_long_step_keys_record_distinct_changes_and_dedupe_retries(
    catalog_engine: Engine,
) -> None:
    draft = create_draft(catalog_engine, NORTHWIND, *january("America/New_York"))
    # A step id naming a subscription id of 300+ characters: only the step differs.
    step = f"billing-period/{'x' * 320}/2026-01-01/run"
    adjust_fee(catalog_engine, draft.id, _units(2), key=f"{step}/activity-7")
    adjust_fee(catalog_engine, draft.id, _units(3), key=f"{step}/activity-8")
    adjust_fee(catalog_engine, draft.id, _units(3), key=f"{step}/activity-8")  # a retry
    adjusted = [
        entry
        for entry in invoice_timeline(catalog_engine, draft.id)
        if entry.kind == TimelineKind.FEE_ADJUSTED
    ]
    assert len(adjusted) == 2
    assert "2 units" in adjusted[0].summary and "3 units" in adjusted[1].summary
    with catalog_engine.connect() as connection:
        lengths = connection.execute(text("SELECT length(key) FROM invoice_timeline")).scalars()
        assert max(lengths) <= KEY_LIMIT


def test_every_change_in_order_with_its_actor_and_the_total_after(
    catalog_engine: Engine,
) -> None:
    engine = catalog_engine
    catalog = example_catalog()
    acme_us = entry(catalog, "billing_entities", "code", "acme_us")
    acme_us["approval"] = {"total_above_cents": 10_000}
    load_catalog(engine, catalog)
    start, end = january("America/New_York")
    draft = create_draft(engine, NORTHWIND, start, end, drafted_at=DRAFTED_AT)
    storage = event(NORTHWIND, "gb-1", "peak_storage_gb", "2026-01-12T00:00:00+00:00", gb=500)
    record_usage(engine, NORTHWIND, start, end, [storage], invoice_id=draft.id, actor="ingest")
    refresh_draft(engine, draft.id, key="refresh-1", actor="ops")
    goodwill = AdjustedFee(
        charge_code="peak_storage_gb",
        mode=AdjustmentMode.AMOUNT,
        units=Decimal(1),
        unit_amount=Decimal("12.34"),
    )
    adjust_fee(engine, draft.id, goodwill, key="edit-1", actor="carol")
    adjust_fee(engine, draft.id, goodwill, key="edit-1", actor="carol")  # its retry
    remove_fee_adjustment(engine, draft.id, "peak_storage_gb", key="remove-1", actor="carol")
    remove_fee_adjustment(engine, draft.id, "peak_storage_gb", actor="carol")  # nothing left
    acme_us["grace_period_days"] = 5
    load_catalog(engine, catalog)
    recompute_grace_period(engine, draft.id, key="grace-1", actor="ops")
    for _ in range(2):  # a refusal stored twice (a retried step) is one entry
        record_rejected_input(
            engine,
            key="run-1/7",
            source="billing-period/sub_northwind_growth/2026-01-01",
            kind="edit_fee",
            payload="{}",
            reason="charge 'seats' is not part of this subscription's plan",
            invoice_id=draft.id,
            actor="mallory",
        )
    assert finalize_invoice(engine, draft.id, ISSUED_AT, actor="bob").held
    final = finalize_invoice(
        engine, draft.id, ISSUED_AT, approval=Approval(approved_by="alice"), actor="alice"
    ).invoice
    assert final.status == InvoiceStatus.FINALIZED

    entries = invoice_timeline(engine, draft.id)
    assert [(e.kind, e.actor, e.total_amount_cents) for e in entries] == [
        (TimelineKind.DRAFT_CREATED, SYSTEM_ACTOR, 29_900),
        (TimelineKind.USAGE_RECORDED, "ingest", 29_900),  # the fees follow on refresh
        (TimelineKind.REFRESHED, "ops", 34_900),
        (TimelineKind.FEE_ADJUSTED, "carol", 31_134),
        (TimelineKind.FEE_ADJUSTMENT_REMOVED, "carol", 34_900),
        (TimelineKind.GRACE_PERIOD_CHANGED, "ops", 34_900),
        (TimelineKind.INPUT_REJECTED, "mallory", 34_900),
        (TimelineKind.APPROVAL_REQUIRED, "bob", 34_900),  # still the draft's total
        (TimelineKind.APPROVED, "alice", 19_900),
        (TimelineKind.FINALIZED, "alice", 19_900),
    ]
    summaries = [e.summary for e in entries]
    assert "1 event accepted" in summaries[1]
    assert "total 29900 -> 34900 cents" in summaries[2]
    assert "would total 19900 cents" in summaries[7]
    assert summaries[9] == "finalized as ACME-000001: total 19900 cents"
    assert entries[0].at == DRAFTED_AT and entries[-1].at == ISSUED_AT


def test_a_closed_invoice_ends_its_timeline_with_closed(catalog_engine: Engine) -> None:
    draft = create_draft(catalog_engine, KOALA_PAYG, *january("Australia/Sydney"))
    finalize_invoice(catalog_engine, draft.id, ISSUED_AT)
    finalize_invoice(catalog_engine, draft.id, ISSUED_AT)  # a retry records nothing
    assert [e.kind for e in invoice_timeline(catalog_engine, draft.id)] == [
        TimelineKind.DRAFT_CREATED,
        TimelineKind.CLOSED,
    ]
