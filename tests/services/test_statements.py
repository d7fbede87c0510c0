"""How many SQL statements each invoice operation sends: an upper bound per operation.

The store's cost per period is mostly round trips; these bounds keep a later change from
quietly adding statements (a reload, a lazy load, a per-fee query).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Engine, event

from billing.models import AdjustedFee, AdjustmentMode, InvoiceStatus
from services.invoices import (
    adjust_fee,
    create_draft,
    finalize_invoice,
    queue_drafted_webhook,
    refresh_draft,
    remove_fee_adjustment,
)
from services.usage import record_usage
from tests.services.support import event as usage_event
from tests.services.support import january
from tests.services.test_invoices import ISSUED_AT, KOALA_PAYG, NORTHWIND

T = TypeVar("T")

# Statements per call, BEGIN/COMMIT excluded (the example catalog: a plan with usage
# charges of several aggregation types, a coupon, a wallet, one webhook endpoint).
BOUNDS = {
    "create_draft": 0,
    "refresh_draft": 0,
    "adjust_fee": 0,
    "remove_fee_adjustment": 0,
    "finalize_invoice": 0,
    "finalize_invoice (closed)": 0,
    "finalize_invoice (repeat)": 0,
    "queue_drafted_webhook": 0,
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


def _measure(engine: Engine, counts: dict[str, int], name: str, call: Callable[[], T]) -> T:
    with _counting(engine) as statements:
        result = call()
    counts[name] = len(statements)
    if os.environ.get("SHOW_SQL"):
        print("==", name, *(" ".join(s.split())[:150] for s in statements), sep="\n  ")
    return result


def test_statements_per_invoice_operation(catalog_engine: Engine) -> None:
    engine = catalog_engine
    start, end = january("America/New_York")
    record_usage(
        engine,
        NORTHWIND,
        start,
        end,
        [usage_event(NORTHWIND, f"c{i}", "api_calls", "2026-01-20T12:00:00+00:00") for i in range(5)],
    )
    counts: dict[str, int] = {}
    draft = _measure(engine, counts, "create_draft", lambda: create_draft(engine, NORTHWIND, start, end))
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
    _measure(engine, counts, "queue_drafted_webhook", lambda: queue_drafted_webhook(engine, draft.id))
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
    print(engine.dialect.name, counts)
    over = {name: (counts[name], bound) for name, bound in BOUNDS.items() if counts[name] > bound}
    assert not over, f"statements over their bound (count, bound): {over}"
