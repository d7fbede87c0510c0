"""The invoice timeline as the services write it: keys, order, actors, totals after."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Engine, text

from billing.models import AdjustedFee, AdjustmentMode
from billing.timeline import TimelineKind
from services.invoices import adjust_fee, create_draft
from services.timeline import invoice_timeline
from store.timeline import KEY_LIMIT, stored_key
from tests.services.support import january

NORTHWIND = "sub_northwind_growth"


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
