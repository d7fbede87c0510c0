"""Usage signals recorded as received: each message validated by the step, the valid ones
recorded together, a malformed one refused whole with the reason."""

from __future__ import annotations

import json

from sqlalchemy import Engine

from billing.models import UsageBatch
from services.catalog import get_billing_context
from services.rejections import list_rejections
from services.usage import LISTED_REJECTIONS_BYTES, period_usage, record_usage_batches
from tests.services.support import event, january

NORTHWIND = "sub_northwind_growth"
AT = "2026-01-10T12:00:00+00:00"


def message(*transaction_ids: str, gb: str = "4", requested_by: str | None = None) -> str:
    """A usage signal's JSON text, as a sender's SDK encodes it."""
    events = [event(NORTHWIND, t, "peak_storage_gb", AT, gb=gb) for t in transaction_ids]
    return UsageBatch(events=events, requested_by=requested_by).model_dump_json()


def test_malformed_messages_are_refused_whole_and_the_others_recorded(
    catalog_engine: Engine,
) -> None:
    start, end = january("America/New_York")
    valid = json.loads(message("m-1", "m-2"))
    nan = json.loads(message("m-3"))
    nan["events"][0]["properties"]["gb"] = float("nan")  # JSON's NaN: not a finite number
    naive = json.loads(message("m-4"))
    naive["events"][0]["timestamp"] = "2026-01-10T12:00:00"  # no timezone
    batches = [
        json.dumps(valid),
        '{"events": "not a list"}',
        json.dumps(nan),  # Python writes NaN, as some senders do
        "not json at all",
        json.dumps(naive),
        message("m-5", "m-1", gb="lots"),  # valid message: one refused event, one duplicate
    ]

    receipt = record_usage_batches(catalog_engine, NORTHWIND, start, end, batches)

    reasons = {m.position: m.reason for m in receipt.malformed}
    assert sorted(reasons) == [1, 2, 3, 4]
    assert "events: Input should be a valid array" in reasons[1]
    assert "finite number" in reasons[2]
    assert "Invalid JSON" in reasons[3]
    assert "timezone" in reasons[4]
    assert (receipt.accepted, receipt.duplicates) == (2, 1)
    assert [r.transaction_id for r in receipt.rejected] == ["m-5"]
    usage = period_usage(catalog_engine, get_billing_context(catalog_engine, NORTHWIND), start, end)
    assert usage["peak_storage_gb"].events_count == 2  # m-1 and m-2; m-3 and m-4 not stored


def test_the_same_step_run_again_answers_its_first_receipt(catalog_engine: Engine) -> None:
    start, end = january("America/New_York")
    batches = [message("r-1", requested_by="meter"), "[]", message("r-2")]
    step = "billing-period/sub/2026-01-01/run-1/3"

    first = record_usage_batches(catalog_engine, NORTHWIND, start, end, batches, key=step)
    again = record_usage_batches(catalog_engine, NORTHWIND, start, end, batches, key=step)

    assert (first.accepted, first.duplicates, [m.position for m in first.malformed]) == (2, 0, [1])
    assert again == first  # not "2 duplicates": the step's own events
    copy = record_usage_batches(catalog_engine, NORTHWIND, start, end, batches, key=f"{step}0")
    assert (copy.accepted, copy.duplicates) == (0, 2)


def test_only_malformed_messages_record_nothing(catalog_engine: Engine) -> None:
    start, end = january("America/New_York")
    receipt = record_usage_batches(catalog_engine, NORTHWIND, start, end, ['{"events": []}'])
    assert (receipt.accepted, receipt.duplicates, receipt.rejected) == (0, 0, [])
    assert "events: List should have at least 1 item" in receipt.malformed[0].reason


def test_a_burst_of_refused_events_keeps_the_receipt_small(catalog_engine: Engine) -> None:
    # The receipt is a local step's result in the workflow's history (2 MB at most): a
    # burst of refused events lists the first ones; the store keeps every one of them.
    start, end = january("America/New_York")
    late = "2026-03-10T12:00:00+00:00"  # outside January: each refused with a long reason
    batches = [
        UsageBatch(
            events=[event(NORTHWIND, f"late-{m}-{i}", "api_calls", late) for i in range(1000)]
        ).model_dump_json()
        for m in range(13)
    ]
    assert sum(len(text) for text in batches) > 1_500_000

    receipt = record_usage_batches(catalog_engine, NORTHWIND, start, end, batches)

    assert len(receipt.model_dump_json()) <= LISTED_REJECTIONS_BYTES * 1.1
    assert receipt.accepted == 0 and receipt.rejected_not_listed > 0
    assert len(receipt.rejected) + receipt.rejected_not_listed == 13_000
    stored = list_rejections(catalog_engine, subscription_external_id=NORTHWIND)
    assert len(stored) == 13_000
