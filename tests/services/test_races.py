"""Concurrent changes of one invoice: the invoice's row lock is taken before anything the
decision depends on is read, so a change that waited for another sees what it wrote.

Each test holds the invoice (PostgreSQL: its row lock; SQLite: the write lock) while the
racers start, so each racer has begun and waits; the racers then go in the order they
queued (PostgreSQL) or in any order (SQLite: whoever the busy handler lets in).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import Engine, text

from billing.approval import ApprovalStatus
from billing.errors import InvoiceNotEditable
from billing.models import AdjustedFee, AdjustmentMode, Invoice, InvoiceStatus
from billing.timeline import TimelineKind
from services.catalog import load_catalog
from services.finalization import Approval, FinalizationOutcome, finalize_invoice
from services.invoices import adjust_fee, create_draft, get_invoice, remove_fee_adjustment
from services.timeline import invoice_timeline
from store.db import make_engine
from tests.services.support import entry, example_catalog, january
from tests.services.test_invoices import ISSUED_AT, NORTHWIND

SIXTY_THOUSAND_CALLS = AdjustedFee(
    charge_code="api_calls", mode=AdjustmentMode.UNITS, units=Decimal(60_000)
)


class _Racers(NamedTuple):
    engine: Engine
    name: str  # PostgreSQL: the application_name of the engine's connections


@contextmanager
def _racers_engine(database_url: str) -> Iterator[_Racers]:
    """An engine whose connections name themselves, so the test can see them wait."""
    name = f"race-{uuid.uuid4().hex[:12]}"
    kwargs: dict[str, Any] = {}
    if database_url.startswith("postgresql"):
        kwargs["connect_args"] = {"application_name": name}
    engine = make_engine(database_url, **kwargs)
    try:
        yield _Racers(engine, name)
    finally:
        engine.dispose()


def _wait_until_waiting(observer: Engine, racers: _Racers, count: int) -> None:
    """Until ``count`` racers wait for a lock (PostgreSQL), or a moment (SQLite)."""
    if observer.dialect.name != "postgresql":
        time.sleep(0.3)
        return
    deadline = time.monotonic() + 10
    with observer.connect() as connection:
        while time.monotonic() < deadline:
            waiting = connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = :name AND wait_event_type = 'Lock'"
                ),
                {"name": racers.name},
            ).scalar_one()
            if waiting >= count:
                return
            connection.rollback()
            time.sleep(0.02)
    raise AssertionError(f"{count} racers never waited for the invoice's lock")


def _race(engine: Engine, racers: _Racers, invoice_id: str, *calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` on threads, queued in this order behind a lock on the invoice; each
    one's result or exception."""
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            results[index] = call()
        except BaseException as error:  # the test inspects it
            results[index] = error

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    with engine.connect() as holder:
        holder.begin()  # SQLite: BEGIN IMMEDIATE, the write lock
        holder.execute(
            text("SELECT id FROM invoices WHERE id = :id FOR UPDATE")
            if engine.dialect.name == "postgresql"
            else text("SELECT id FROM invoices WHERE id = :id"),
            {"id": invoice_id},
        )
        for queued, thread in enumerate(threads, start=1):
            thread.start()
            _wait_until_waiting(engine, racers, queued)
        holder.rollback()
    for thread in threads:
        thread.join(timeout=60)
    return results


def _kinds(engine: Engine, invoice_id: str) -> list[TimelineKind]:
    return [entry.kind for entry in invoice_timeline(engine, invoice_id)]


def _consistent(invoice: Invoice) -> None:
    """The stored fees are the ones the stored totals were computed from."""
    assert sum(fee.amount_cents for fee in invoice.fees) == invoice.fees_amount_cents


def test_two_finalizations_racing_finalize_once(catalog_engine: Engine, database_url: str) -> None:
    draft = create_draft(catalog_engine, NORTHWIND, *january("America/New_York"))
    with _racers_engine(database_url) as (racers, name):
        first, second = _race(
            catalog_engine,
            _Racers(racers, name),
            draft.id,
            lambda: finalize_invoice(racers, draft.id, ISSUED_AT),
            lambda: finalize_invoice(racers, draft.id, ISSUED_AT),
        )
    assert isinstance(first, FinalizationOutcome) and isinstance(second, FinalizationOutcome)
    # The one that waited returns the stored outcome: the invoice as finalized, fees and all.
    stored = get_invoice(catalog_engine, draft.id)
    assert first == second
    assert first.invoice == stored
    assert (stored.status, stored.number) == (InvoiceStatus.FINALIZED, "ACME-000001")
    assert stored.coupons_amount_cents == 5_000 and stored.prepaid_credit_amount_cents == 10_000
    assert sum(fee.coupons_amount_cents for fee in stored.fees) == 5_000
    assert _kinds(catalog_engine, draft.id).count(TimelineKind.FINALIZED) == 1
    with catalog_engine.connect() as connection:
        last_number = connection.execute(
            text("SELECT last_number FROM invoice_sequences WHERE billing_entity_code = 'acme_us'")
        ).scalar_one()
        consumptions = connection.execute(
            text("SELECT count(*) FROM coupon_consumptions")
        ).scalar_one()
    assert (last_number, consumptions) == (1, 1)


def test_an_edit_racing_a_finalization_is_billed_or_refused(
    catalog_engine: Engine, database_url: str
) -> None:
    draft = create_draft(catalog_engine, NORTHWIND, *january("America/New_York"))
    with _racers_engine(database_url) as (racers, name):
        edit, outcome = _race(
            catalog_engine,
            _Racers(racers, name),
            draft.id,
            lambda: adjust_fee(racers, draft.id, SIXTY_THOUSAND_CALLS),
            lambda: finalize_invoice(racers, draft.id, ISSUED_AT),
        )
    assert isinstance(outcome, FinalizationOutcome)
    final = get_invoice(catalog_engine, draft.id)
    assert outcome.invoice == final and final.number == "ACME-000001"
    _consistent(final)
    kinds = _kinds(catalog_engine, draft.id)
    assert kinds.count(TimelineKind.FINALIZED) == 1
    if isinstance(edit, InvoiceNotEditable):  # the finalization went first (SQLite may)
        assert catalog_engine.dialect.name == "sqlite"
        assert final.fees_amount_cents == 29_900 and TimelineKind.FEE_ADJUSTED not in kinds
    else:  # the edit went first: it is billed
        assert final.fees_amount_cents == 29_900 + 1_000  # 10,000 calls over the free 50,000
        assert kinds.index(TimelineKind.FEE_ADJUSTED) < kinds.index(TimelineKind.FINALIZED)


def test_a_finalization_racing_an_edit_refuses_the_edit(
    catalog_engine: Engine, database_url: str
) -> None:
    draft = create_draft(catalog_engine, NORTHWIND, *january("America/New_York"))
    with _racers_engine(database_url) as (racers, name):
        outcome, edit = _race(
            catalog_engine,
            _Racers(racers, name),
            draft.id,
            lambda: finalize_invoice(racers, draft.id, ISSUED_AT),
            lambda: adjust_fee(racers, draft.id, SIXTY_THOUSAND_CALLS),
        )
    assert isinstance(outcome, FinalizationOutcome)
    final = get_invoice(catalog_engine, draft.id)
    assert outcome.invoice == final
    _consistent(final)
    if catalog_engine.dialect.name == "postgresql":
        assert isinstance(edit, InvoiceNotEditable)
    if isinstance(edit, InvoiceNotEditable):
        assert final.fees_amount_cents == 29_900
    assert _kinds(catalog_engine, draft.id).count(TimelineKind.FINALIZED) == 1


def test_an_edit_and_its_removal_racing_leave_fees_and_totals_agreeing(
    catalog_engine: Engine, database_url: str
) -> None:
    draft = create_draft(catalog_engine, NORTHWIND, *january("America/New_York"))
    with _racers_engine(database_url) as (racers, name):
        added, removed = _race(
            catalog_engine,
            _Racers(racers, name),
            draft.id,
            lambda: adjust_fee(racers, draft.id, SIXTY_THOUSAND_CALLS),
            lambda: remove_fee_adjustment(racers, draft.id, "api_calls"),
        )
    assert not isinstance(added, BaseException) and not isinstance(removed, BaseException)
    stored = get_invoice(catalog_engine, draft.id)
    _consistent(stored)
    adjusted = [fee.code for fee in stored.fees if fee.adjusted]
    kinds = _kinds(catalog_engine, draft.id)
    if TimelineKind.FEE_ADJUSTMENT_REMOVED in kinds:  # the removal went second
        assert adjusted == [] and stored.fees_amount_cents == 29_900
    else:  # the removal found nothing (SQLite may run it first); the edit stands
        assert catalog_engine.dialect.name == "sqlite"
        assert adjusted == ["api_calls"] and stored.fees_amount_cents == 30_900


def test_an_approval_racing_a_finalization_finalizes_once(
    catalog_engine: Engine, database_url: str
) -> None:
    catalog = example_catalog()
    entry(catalog, "billing_entities", "code", "acme_us")["approval"] = {"always": True}
    load_catalog(catalog_engine, catalog)
    draft = create_draft(catalog_engine, NORTHWIND, *january("America/New_York"))
    approval = Approval(approved_by="alice")
    with _racers_engine(database_url) as (racers, name):
        held, approved = _race(
            catalog_engine,
            _Racers(racers, name),
            draft.id,
            lambda: finalize_invoice(racers, draft.id, ISSUED_AT),
            lambda: finalize_invoice(racers, draft.id, ISSUED_AT, approval=approval),
        )
    assert isinstance(held, FinalizationOutcome) and isinstance(approved, FinalizationOutcome)
    final = get_invoice(catalog_engine, draft.id)
    assert approved.invoice == final and final.number == "ACME-000001"
    assert final.approval is not None and final.approval.status == ApprovalStatus.APPROVED
    assert final.approval.approved_by == "alice"
    kinds = _kinds(catalog_engine, draft.id)
    assert kinds.count(TimelineKind.FINALIZED) == 1 and kinds.count(TimelineKind.APPROVED) == 1
    if held.held:  # the hold went first (always on PostgreSQL): the approval released it
        assert kinds.index(TimelineKind.APPROVAL_REQUIRED) < kinds.index(TimelineKind.APPROVED)
    else:  # the approval went first (SQLite may): the finalization returns its outcome
        assert catalog_engine.dialect.name == "sqlite" and held == approved
