"""Two workers run the same usage recording step at once (a local activity re-executed on
another worker while its first run is still going): the batch is stored once and both
runs answer the same receipt.

PostgreSQL only: SQLite runs one writing transaction at a time (``BEGIN IMMEDIATE``), so
the second run starts after the first committed and finds its receipt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select

from billing.models import UsageReceipt
from services.usage import record_usage
from store.schema import RejectedEventRow, UsageEventRow, UsageReceiptRow
from tests.services.support import event as usage_event
from tests.services.support import january
from tests.services.test_invoices import NORTHWIND

STEP = f"billing-period/{NORTHWIND}/2026-01-01/run-1/3"
AT = "2026-01-20T12:00:00+00:00"


def _both_looked_for_the_receipt(engine: Engine, lookups: list[str]) -> Callable[[], None]:
    """Hold each run after it found no receipt until the other one has too, so both
    record the batch at once (``lookups``: every receipt lookup's thread); returns the
    function that removes the hook."""
    barrier = threading.Barrier(2, timeout=10)
    held = threading.local()  # only a run's first look (the loser looks again)

    def after(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not (statement.lstrip().startswith("SELECT") and "FROM usage_receipts" in statement):
            return
        lookups.append(threading.current_thread().name)
        if not getattr(held, "done", False):
            held.done = True
            barrier.wait()

    event.listen(engine, "after_cursor_execute", after)
    return lambda: event.remove(engine, "after_cursor_execute", after)


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def test_the_same_step_run_twice_at_once_stores_the_batch_once(catalog_engine: Engine) -> None:
    engine = catalog_engine
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writer at a time: the two runs cannot overlap")
    start, end = january("America/New_York")
    batch = [usage_event(NORTHWIND, f"race-{i}", "api_calls", AT) for i in range(50)]
    batch.append(usage_event(NORTHWIND, "race-refused", "peak_storage_gb", AT, gb="lots"))

    def step() -> UsageReceipt:
        return record_usage(engine, NORTHWIND, start, end, batch, key=STEP)

    lookups: list[str] = []
    remove = _both_looked_for_the_receipt(engine, lookups)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            runs = [pool.submit(step) for _ in range(2)]
            receipts = [run.result(timeout=30) for run in runs]
    finally:
        remove()

    # Both runs looked before either stored its receipt; the loser looked once more,
    # after its own receipt collided with the winner's.
    assert len(lookups) == 3 and len(set(lookups)) == 2
    # Neither run fails: the one that lost the race answers the winner's receipt.
    expected = UsageReceipt(accepted=50, duplicates=0, rejected=receipts[0].rejected)
    assert [r.transaction_id for r in expected.rejected] == ["race-refused"]
    assert receipts == [expected, expected]
    # The step run once more (its workflow task lost again) still answers the same.
    assert step() == expected
    assert _count(engine, UsageEventRow) == 50
    assert _count(engine, RejectedEventRow) == 1
    assert _count(engine, UsageReceiptRow) == 1
