"""How many SQL statements each invoice operation sends: an upper bound per operation.

The store's cost per period is mostly round trips; these bounds keep a later change from
quietly adding statements (a reload, a lazy load, a per-fee query).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, event

import services.catalog
import services.invoices
from billing.models import AdjustedFee, AdjustmentMode, InvoiceStatus
from services.catalog import billing_contexts, get_billing_context, list_subscriptions
from services.finalization import finalize_invoice
from services.invoices import (
    adjust_fee,
    create_draft,
    period_statuses,
    queue_drafted_webhook,
    refresh_draft,
    remove_fee_adjustment,
)
from services.usage import record_usage
from tests.services.support import event as usage_event
from tests.services.support import january
from tests.services.test_invoices import ISSUED_AT, KOALA_PAYG, NORTHWIND

T = TypeVar("T")

# Statements per call on either dialect, BEGIN/COMMIT excluded (the example catalog: a
# plan with count, max and unique_count charges, a coupon, a wallet, one webhook
# endpoint). Before the store went to Core statements: 15, 13, 14, 14, 24, 10, 3, 8; one
# fewer each since the billing context is one statement (10, 8, 12, 12, 20, 7 before).
# Each change counts its invoice timeline entry (one INSERT, same transaction).
BOUNDS = {
    "create_draft": 9,
    "refresh_draft": 7,
    "adjust_fee": 11,
    "remove_fee_adjustment": 11,
    # Finalizing or closing deletes the period's usage receipts: one DELETE each.
    "finalize_invoice": 20,
    "finalize_invoice (closed)": 7,
    "finalize_invoice (repeat)": 2,
    "queue_drafted_webhook": 5,
}
# PostgreSQL takes an invoice's row lock in a statement of its own, before reading the
# invoice (InvoiceRepository.lock): one more statement for these.
LOCKS_THE_INVOICE = {
    "refresh_draft",
    "adjust_fee",
    "remove_fee_adjustment",
    "finalize_invoice",
    "finalize_invoice (closed)",
    "finalize_invoice (repeat)",
    "queue_drafted_webhook",
}


@contextmanager
def _counting(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA")):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _measure(engine: Engine, counts: dict[str, list[str]], name: str, call: Callable[[], T]) -> T:
    with _counting(engine) as statements:
        result = call()
    counts[name] = [" ".join(statement.split())[:100] for statement in statements]
    return result


def test_statements_per_invoice_operation(catalog_engine: Engine) -> None:
    engine = catalog_engine
    start, end = january("America/New_York")
    record_usage(
        engine,
        NORTHWIND,
        start,
        end,
        [
            usage_event(NORTHWIND, f"c{i}", "api_calls", "2026-01-20T12:00:00+00:00")
            for i in range(5)
        ],
    )
    counts: dict[str, list[str]] = {}
    draft = _measure(
        engine, counts, "create_draft", lambda: create_draft(engine, NORTHWIND, start, end)
    )
    _measure(engine, counts, "refresh_draft", lambda: refresh_draft(engine, draft.id))
    adjustment = AdjustedFee(
        charge_code="api_calls", mode=AdjustmentMode.UNITS, units=Decimal(60_000)
    )
    _measure(engine, counts, "adjust_fee", lambda: adjust_fee(engine, draft.id, adjustment))
    _measure(
        engine,
        counts,
        "remove_fee_adjustment",
        lambda: remove_fee_adjustment(engine, draft.id, "api_calls"),
    )
    _measure(
        engine, counts, "queue_drafted_webhook", lambda: queue_drafted_webhook(engine, draft.id)
    )
    outcome = _measure(
        engine, counts, "finalize_invoice", lambda: finalize_invoice(engine, draft.id, ISSUED_AT)
    )
    assert outcome.invoice.status == InvoiceStatus.FINALIZED
    _measure(
        engine,
        counts,
        "finalize_invoice (repeat)",
        lambda: finalize_invoice(engine, draft.id, ISSUED_AT),
    )
    empty = create_draft(engine, KOALA_PAYG, *january("Australia/Sydney"))
    closed = _measure(
        engine,
        counts,
        "finalize_invoice (closed)",
        lambda: finalize_invoice(engine, empty.id, ISSUED_AT),
    )
    assert closed.invoice.status == InvoiceStatus.CLOSED
    locking = 1 if engine.dialect.name == "postgresql" else 0
    over = {
        name: counts[name]
        for name, bound in BOUNDS.items()
        if len(counts[name]) > bound + (locking if name in LOCKS_THE_INVOICE else 0)
    }
    assert not over, f"statements over their bound: {over}"


def test_bulk_commands_read_contexts_and_invoice_statuses_in_one_statement_each(
    catalog_engine: Engine,
) -> None:
    """``usage send`` and ``period start-all`` read what they check for every period at
    once: every subscription's billing context, then the status of every period's invoice."""
    subscriptions = [s.external_id for s in list_subscriptions(catalog_engine)]
    assert len(subscriptions) > 3
    with _counting(catalog_engine) as statements:
        contexts = billing_contexts(catalog_engine, [*subscriptions, "sub_unknown"])
    assert len(statements) == 1
    assert contexts == {s: get_billing_context(catalog_engine, s) for s in subscriptions}

    draft = create_draft(catalog_engine, NORTHWIND, *january("America/New_York"))
    finalize_invoice(catalog_engine, draft.id, ISSUED_AT)
    koala = create_draft(catalog_engine, KOALA_PAYG, *january("UTC"))
    periods = [
        (NORTHWIND, draft.period_start),
        (KOALA_PAYG, koala.period_start),
        (NORTHWIND, koala.period_start),  # another instant: no invoice
        ("sub_sakura_starter", draft.period_start),  # no invoice
    ]
    with _counting(catalog_engine) as statements:
        statuses = period_statuses(catalog_engine, periods)
    assert len(statements) == 1
    assert statuses == {
        (NORTHWIND, draft.period_start): InvoiceStatus.FINALIZED,
        (KOALA_PAYG, koala.period_start): InvoiceStatus.DRAFT,
    }


def test_bulk_reads_merge_their_chunks(
    catalog_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of subscriptions are read 500 at a time: the chunks add up to one answer."""
    monkeypatch.setattr(services.catalog, "_CONTEXTS_PER_STATEMENT", 2)
    monkeypatch.setattr(services.invoices, "_STATUSES_PER_STATEMENT", 2)
    subscriptions = [s.external_id for s in list_subscriptions(catalog_engine)]
    with _counting(catalog_engine) as statements:
        contexts = billing_contexts(catalog_engine, subscriptions)
    assert len(statements) == (len(subscriptions) + 1) // 2
    assert sorted(contexts) == sorted(subscriptions)
    start, end = january("America/New_York")
    drafts = {s: create_draft(catalog_engine, s, start, end) for s in subscriptions}
    statuses = period_statuses(catalog_engine, [(s, start) for s in subscriptions])
    assert statuses == {(s, start): drafts[s].status for s in subscriptions}
