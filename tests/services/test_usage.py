"""Usage ingestion (exactly once, rejections kept) and SQL aggregation."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select, text

from billing.models import AggregationType
from billing.pricing import aggregate
from services.catalog import get_billing_context, load_catalog
from services.rejections import list_rejections, record_rejected_input
from services.usage import period_usage, record_usage
from store.schema import UsageEventRow
from tests.services.support import event, january

NORTHWIND = "sub_northwind_growth"  # growth: api_calls (count), active_users, peak_storage_gb
BRANDT = "sub_brandt_team"  # team: seats (weighted_sum), reserved_instances (latest)
KOALA = "sub_koala_payments"  # payments: payment_volume (sum) priced by percentage


def test_duplicates_are_counted_once_and_the_first_copy_wins(catalog_engine: Engine) -> None:
    start, end = january("America/New_York")
    first = event(NORTHWIND, "t-1", "peak_storage_gb", "2026-01-10T12:00:00+00:00", gb="40")
    copy = event(NORTHWIND, "t-1", "peak_storage_gb", "2026-01-11T12:00:00+00:00", gb="999")
    other = event(NORTHWIND, "t-2", "peak_storage_gb", "2026-01-12T12:00:00+00:00", gb="10")

    result = record_usage(catalog_engine, NORTHWIND, start, end, [first, copy, other])
    assert (result.accepted, result.duplicates, result.rejected) == (2, 1, [])

    again = record_usage(catalog_engine, NORTHWIND, start, end, [copy, other])
    assert (again.accepted, again.duplicates) == (0, 2)

    usage = period_usage(catalog_engine, get_billing_context(catalog_engine, NORTHWIND), start, end)
    assert usage["peak_storage_gb"].units == Decimal("40")  # not 999: the first copy won
    assert usage["peak_storage_gb"].events_count == 2


def test_a_batch_with_known_ids_stores_only_its_new_events_in_batch_order(
    catalog_engine: Engine,
) -> None:
    # On PostgreSQL a batch of new events is COPYed straight in; one known id sends the
    # whole batch the deduplicating way. Either way: the new ones stored, in batch order
    # (``latest`` breaks timestamp ties by id), the first copy kept, refusals stored.
    start, end = january("America/New_York")
    at = "2026-01-10T12:00:00+00:00"
    record_usage(
        catalog_engine,
        NORTHWIND,
        start,
        end,
        [event(NORTHWIND, f"old-{i}", "peak_storage_gb", at, gb=str(i)) for i in range(2)],
    )
    batch = [
        event(NORTHWIND, "new-c", "peak_storage_gb", at, gb="7"),
        event(NORTHWIND, "old-0", "peak_storage_gb", at, gb="999"),
        event(NORTHWIND, "new-a", "api_calls", datetime.fromisoformat("2026-01-10T17:30:00+05:30")),
        event(NORTHWIND, "refused", "peak_storage_gb", at, gb="lots"),
        event(NORTHWIND, "old-1", "peak_storage_gb", at, gb="999"),
        event(NORTHWIND, "new-b", "peak_storage_gb", at, gb="5"),
    ]
    result = record_usage(catalog_engine, NORTHWIND, start, end, batch)
    assert (result.accepted, result.duplicates) == (3, 2)
    assert [r.transaction_id for r in result.rejected] == ["refused"]
    stored = list_rejections(catalog_engine, subscription_external_id=NORTHWIND)
    assert [r.key.rsplit("/", 1)[1] for r in stored] == ["refused"]
    with catalog_engine.connect() as connection:
        rows = connection.execute(
            select(
                UsageEventRow.transaction_id, UsageEventRow.number_value, UsageEventRow.timestamp
            )
            .where(UsageEventRow.subscription_external_id == NORTHWIND)
            .order_by(UsageEventRow.id)
        ).all()
    assert [row[0] for row in rows] == ["old-0", "old-1", "new-c", "new-a", "new-b"]
    assert [row[1] for row in rows if row[0].startswith("old")] == [0, 1]  # first copies
    assert rows[3][2] == datetime(2026, 1, 10, 12, tzinfo=UTC)


def test_a_batch_of_new_events_and_its_replay(catalog_engine: Engine) -> None:
    start, end = january("America/New_York")
    batch = [
        event(NORTHWIND, f"t-{i}", "peak_storage_gb", "2026-01-10T12:00:00+00:00", gb=str(i))
        for i in range(1000)
    ]
    first = record_usage(catalog_engine, NORTHWIND, start, end, batch)
    again = record_usage(catalog_engine, NORTHWIND, start, end, batch)
    assert (first.accepted, first.duplicates, again.accepted, again.duplicates) == (
        1000,
        0,
        0,
        1000,
    )
    usage = period_usage(catalog_engine, get_billing_context(catalog_engine, NORTHWIND), start, end)
    assert usage["peak_storage_gb"].units == Decimal(999)
    assert usage["peak_storage_gb"].events_count == 1000


def test_a_recording_step_run_again_answers_its_first_receipt(catalog_engine: Engine) -> None:
    # A local activity whose workflow task was lost after it committed runs again under
    # the same step key: the sender must read what the step did, not "all duplicates".
    start, end = january("America/New_York")
    at = "2026-01-10T12:00:00+00:00"
    batch = [
        event(NORTHWIND, "s-1", "peak_storage_gb", at, gb="4"),
        event(NORTHWIND, "s-1", "peak_storage_gb", at, gb="5"),
        event(NORTHWIND, "s-2", "peak_storage_gb", at, gb="lots"),
    ]
    step = "billing-period/sub/2026-01-01/run-1/7"
    first = record_usage(catalog_engine, NORTHWIND, start, end, batch, key=step)
    again = record_usage(catalog_engine, NORTHWIND, start, end, batch, key=step)
    assert (first.accepted, first.duplicates, len(first.rejected)) == (1, 1, 1)
    assert again == first
    # Another step sending the same batch is a sender's copy: duplicates, as without a key.
    copy = record_usage(catalog_engine, NORTHWIND, start, end, batch, key=f"{step}0")
    assert (copy.accepted, copy.duplicates) == (0, 2)
    # Another batch under the same step key is recorded for itself, not answered with the
    # receipt of the first one.
    other = [event(NORTHWIND, "s-3", "peak_storage_gb", at, gb="6")]
    assert record_usage(catalog_engine, NORTHWIND, start, end, other, key=step).accepted == 1
    usage = period_usage(catalog_engine, get_billing_context(catalog_engine, NORTHWIND), start, end)
    assert usage["peak_storage_gb"].events_count == 2


def test_rejected_events_are_stored_with_their_reason(catalog_engine: Engine) -> None:
    start, end = january("America/New_York")
    events = [
        event(NORTHWIND, "late", "api_calls", "2026-02-02T10:00:00+00:00"),
        event(NORTHWIND, "unknown", "seats", "2026-01-05T10:00:00+00:00", seats=1),
        event(NORTHWIND, "nan", "peak_storage_gb", "2026-01-05T10:00:00+00:00", gb="lots"),
        event(NORTHWIND, "missing", "active_users", "2026-01-05T10:00:00+00:00"),
        event(BRANDT, "elsewhere", "api_calls", "2026-01-05T10:00:00+00:00"),
        event(NORTHWIND, "ok", "api_calls", "2026-01-05T10:00:00+00:00"),
    ]
    result = record_usage(catalog_engine, NORTHWIND, start, end, events)
    assert result.accepted == 1
    reasons = {rejected.transaction_id: rejected.reason for rejected in result.rejected}
    assert reasons["late"] == (
        "timestamp 2026-02-02T10:00:00Z is outside the period 2026-01-01..2026-01-31; "
        "it belongs to the period 2026-02-01..2026-02-28"
    )
    assert "unknown metric code 'seats' for plan 'growth'" in reasons["unknown"]
    assert "'lots' is not a number" in reasons["nan"]
    assert "missing property 'user_id'" in reasons["missing"]
    assert "sub_brandt_team" in reasons["elsewhere"]

    stored = list_rejections(catalog_engine, subscription_external_id=NORTHWIND)
    assert {r.key.rsplit("/", 1)[1]: r.reason for r in stored} == reasons
    assert all(r.source == "usage" and r.kind == "usage_event" for r in stored)

    # Sending the same refused events again is idempotent: same answer, no new rows.
    again = record_usage(catalog_engine, NORTHWIND, start, end, events)
    assert (again.accepted, again.duplicates) == (0, 1)
    assert {r.transaction_id for r in again.rejected} == set(reasons)
    with catalog_engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM rejected_events")).scalar()
    assert count == len(reasons)


def test_a_refused_copy_of_an_accepted_event_is_a_duplicate(catalog_engine: Engine) -> None:
    start, end = january("America/New_York")
    good = event(NORTHWIND, "t-1", "api_calls", "2026-01-05T10:00:00+00:00")
    record_usage(catalog_engine, NORTHWIND, start, end, [good])
    late_copy = event(NORTHWIND, "t-1", "api_calls", "2026-02-05T10:00:00+00:00")
    result = record_usage(catalog_engine, NORTHWIND, start, end, [late_copy])
    assert (result.accepted, result.duplicates, result.rejected) == (0, 1, [])


def _random_events(seed: int) -> list[tuple[datetime, str]]:
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, 5, tzinfo=UTC)
    return [
        (
            start + timedelta(seconds=rng.randrange(0, 30 * 86_400)),
            str(Decimal(rng.randrange(-500, 5_000)) / Decimal(100)),
        )
        for _ in range(60)
    ]


AGGREGATION_CATALOG = {
    "billing_entities": [{"code": "be", "name": "BE", "invoice_prefix": "BE"}],
    "customers": [{"external_id": "c", "billing_entity_code": "be"}],
    "billable_metrics": [
        {"code": "m_count", "aggregation_type": "count"},
        {"code": "m_sum", "aggregation_type": "sum", "field_name": "v"},
        {"code": "m_max", "aggregation_type": "max", "field_name": "v"},
        {"code": "m_unique", "aggregation_type": "unique_count", "field_name": "v"},
        {"code": "m_latest", "aggregation_type": "latest", "field_name": "v"},
        {"code": "m_weighted", "aggregation_type": "weighted_sum", "field_name": "v"},
    ],
    "plans": [
        {
            "code": "all",
            "charges": [
                {
                    "billable_metric_code": code,
                    "charge_model": "standard",
                    "properties": {"amount": "1"},
                }
                for code in ("m_count", "m_sum", "m_max", "m_unique", "m_latest", "m_weighted")
            ]
            + [
                {
                    "code": "m_sum_percentage",
                    "billable_metric_code": "m_sum",
                    "charge_model": "percentage",
                    "properties": {"rate": "1"},
                }
            ],
        }
    ],
    "subscriptions": [
        {
            "external_id": "s",
            "customer_external_id": "c",
            "plan_code": "all",
            "started_at": "2025-01-01T00:00:00Z",
        }
    ],
}


@pytest.mark.parametrize("seed", [1, 2])
def test_sql_aggregation_matches_the_pricing_core(engine: Engine, seed: int) -> None:
    load_catalog(engine, AGGREGATION_CATALOG)
    start, end = january("UTC")
    pairs = _random_events(seed)
    codes = ["m_count", "m_sum", "m_max", "m_unique", "m_latest", "m_weighted"]
    events = [
        event("s", f"{code}-{index}", code, at, v=value)
        for code in codes
        for index, (at, value) in enumerate(pairs)
    ]
    assert record_usage(engine, "s", start, end, events).accepted == len(events)

    usage = period_usage(engine, get_billing_context(engine, "s"), start, end)
    for code in codes:
        aggregation = AggregationType(
            code.removeprefix("m_")
            .replace("weighted", "weighted_sum")
            .replace("unique", "unique_count")
        )
        expected = aggregate(aggregation, pairs, start, end)
        assert usage[code].units == expected, code
        assert usage[code].events_count == len(pairs)
        assert usage[code].event_values == ()
    ordered = [Decimal(value) for _, value in sorted(pairs, key=lambda pair: pair[0])]
    assert list(usage["m_sum_percentage"].event_values) == ordered
    assert usage["m_sum_percentage"].units == usage["m_sum"].units


def test_no_usage_gives_zero_units(catalog_engine: Engine) -> None:
    start, end = january("Europe/Berlin")
    usage = period_usage(catalog_engine, get_billing_context(catalog_engine, BRANDT), start, end)
    assert {code: (u.units, u.events_count) for code, u in usage.items()} == {
        "seats": (Decimal(0), 0),
        "reserved_instances": (Decimal(0), 0),
    }


def test_rejected_inputs_are_idempotent_on_their_key(catalog_engine: Engine) -> None:
    for _ in range(2):
        record_rejected_input(
            catalog_engine,
            key="fee-edit/abc",
            source="workflow",
            kind="fee_edit",
            payload='{"charge_code": "nope"}',
            reason="plan 'growth' has no charge 'nope'",
            subscription_external_id=NORTHWIND,
        )
    stored = list_rejections(catalog_engine, source="workflow")
    assert [(r.key, r.kind, r.reason) for r in stored] == [
        ("fee-edit/abc", "fee_edit", "plan 'growth' has no charge 'nope'")
    ]
    assert list_rejections(catalog_engine, subscription_external_id=KOALA) == []


def test_a_refusal_of_the_longest_subscription_id_is_kept(catalog_engine: Engine) -> None:
    # A refused signal's source is its period's workflow id: a subscription id of the
    # longest allowed length (200) makes one of 226 characters.
    subscription = "s" * 200
    source = f"billing-period/{subscription}/2026-01-01"
    key = f"{source}/{'0' * 36}/1"
    record_rejected_input(
        catalog_engine,
        key=key,
        source=source,
        kind="edit_fee",
        payload="{}",
        reason="no such charge",
        subscription_external_id=subscription,
    )
    stored = list_rejections(catalog_engine, subscription_external_id=subscription)
    assert [(r.key, r.source) for r in stored] == [(key, source)]
