"""Usage receipts live as long as their period can run a recording step again: until
its invoice is finalized or closed (receipts without a period: a week)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, func, insert, select

from billing.models import InvoiceStatus, UsageReceipt
from services.finalization import finalize_invoice
from services.invoices import create_draft
from services.usage import record_usage
from store._rows import utcnow
from store.schema import UsageReceiptRow
from store.unit_of_work import UnitOfWork
from store.usage import UNOWNED_RECEIPT_AGE
from tests.services.support import event, february, january
from tests.services.test_invoices import ISSUED_AT, KOALA_PAYG, NORTHWIND

AT = "2026-01-20T12:00:00+00:00"


def _receipts(engine: Engine) -> dict[tuple[str | None, datetime | None], int]:
    """How many receipts each (subscription, period start) has."""
    columns = (UsageReceiptRow.subscription_external_id, UsageReceiptRow.period_start)
    with engine.connect() as connection:
        rows = connection.execute(select(*columns, func.count()).group_by(*columns)).all()
    return {(subscription, start): count for subscription, start, count in rows}


def test_receipts_are_kept_through_the_grace_period_and_deleted_at_finalization(
    catalog_engine: Engine,
) -> None:
    engine = catalog_engine
    start, end = january("America/New_York")
    step = f"billing-period/{NORTHWIND}/2026-01-01/run-1"
    batch = [event(NORTHWIND, "r-1", "api_calls", AT), event(NORTHWIND, "r-2", "api_calls", AT)]
    first = record_usage(engine, NORTHWIND, start, end, batch, key=f"{step}/1")
    draft = create_draft(engine, NORTHWIND, start, end)
    # Late usage in the grace period, recorded against the draft.
    late = [event(NORTHWIND, "r-3", "api_calls", AT)]
    late_receipt = record_usage(
        engine, NORTHWIND, start, end, late, invoice_id=draft.id, key=f"{step}/2"
    )
    # Another period's receipt stays when this one is finalized.
    next_start, next_end = february("America/New_York")
    record_usage(
        engine,
        NORTHWIND,
        next_start,
        next_end,
        [event(NORTHWIND, "f-1", "api_calls", "2026-02-10T12:00:00+00:00")],
        key=f"billing-period/{NORTHWIND}/2026-02-01/run-1/1",
    )
    assert _receipts(engine) == {(NORTHWIND, start): 2, (NORTHWIND, next_start): 1}

    # Both steps run again before finalization (their workflow task was lost): each
    # answers its first run's receipt, not "all duplicates".
    assert record_usage(engine, NORTHWIND, start, end, batch, key=f"{step}/1") == first
    assert (first.accepted, first.duplicates) == (2, 0)
    again = record_usage(engine, NORTHWIND, start, end, late, invoice_id=draft.id, key=f"{step}/2")
    assert again == late_receipt and again.accepted == 1

    outcome = finalize_invoice(engine, draft.id, ISSUED_AT)
    assert outcome.invoice.status == InvoiceStatus.FINALIZED
    assert _receipts(engine) == {(NORTHWIND, next_start): 1}
    # The repeat of a finalization finds nothing more to do.
    assert finalize_invoice(engine, draft.id, ISSUED_AT) == outcome
    assert _receipts(engine) == {(NORTHWIND, next_start): 1}


def test_closing_an_empty_invoice_deletes_its_periods_receipts(catalog_engine: Engine) -> None:
    engine = catalog_engine
    start, end = january("Australia/Sydney")
    # Refused events only: the invoice stays empty and closes (the customer says skip).
    refused = [event(KOALA_PAYG, "k-1", "no_such_metric", "2026-01-10T12:00:00+00:00")]
    receipt = record_usage(engine, KOALA_PAYG, start, end, refused, key="koala/step/1")
    assert (receipt.accepted, len(receipt.rejected)) == (0, 1)
    draft = create_draft(engine, KOALA_PAYG, start, end)
    assert _receipts(engine) == {(KOALA_PAYG, start): 1}
    assert finalize_invoice(engine, draft.id, ISSUED_AT).invoice.status == InvoiceStatus.CLOSED
    assert _receipts(engine) == {}


def test_receipts_without_a_period_go_once_they_are_a_week_old(catalog_engine: Engine) -> None:
    # Rows written before migration 0005 (or by a worker of the release before it) have
    # no period: a finalization deletes them once UNOWNED_RECEIPT_AGE has passed.
    engine = catalog_engine
    now = utcnow()
    ages = {"old": UNOWNED_RECEIPT_AGE + timedelta(hours=1), "young": timedelta(days=1)}
    with engine.begin() as connection:
        connection.execute(
            insert(UsageReceiptRow),
            [
                {
                    "key": key,
                    "accepted": 1,
                    "duplicates": 0,
                    "rejected": [],
                    "created_at": now - age,
                }
                for key, age in ages.items()
            ],
        )
    draft = create_draft(engine, NORTHWIND, *january("America/New_York"))
    finalize_invoice(engine, draft.id, ISSUED_AT)
    with engine.connect() as connection:
        keys = connection.execute(select(UsageReceiptRow.key)).scalars().all()
    assert keys == ["young"]


def test_a_receipt_is_kept_once_under_its_key(catalog_engine: Engine) -> None:
    # The second run of a step that raced its first one learns that its receipt is
    # already stored (record_usage then answers the stored one).
    start, _ = january("America/New_York")
    receipt = UsageReceipt(accepted=1, duplicates=0, rejected=[])
    stored = []
    for accepted in (1, 0):
        with UnitOfWork(catalog_engine) as uow:
            stored.append(
                uow.usage.keep_receipt(
                    "step/1", receipt.model_copy(update={"accepted": accepted}), NORTHWIND, start
                )
            )
            uow.commit()
    assert stored == [True, False]
    with UnitOfWork(catalog_engine) as uow:
        assert uow.usage.receipt("step/1") == receipt
