"""Benchmark: refresh a draft whose period holds N usage events, on PostgreSQL.

Loads a one-subscription catalog into a fresh schema, COPYs N events into January
(half API calls counted, half data transfer summed, as a sum metric priced by a
graduated charge), then times ``services.invoices.refresh_draft`` several times.

    .venv/bin/python bench/refresh_draft.py                 # 1,000,000 events
    .venv/bin/python bench/refresh_draft.py --events 1000   # smoke test

Prints the median and max and writes them to ``bench/results/refresh_draft.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import sqlalchemy
from sqlalchemy import text

from services.catalog import load_catalog
from services.invoices import create_draft, refresh_draft
from store.db import make_engine, upgrade

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SCHEMA = "bench_refresh_draft"
RESULTS = Path(__file__).parent / "results" / "refresh_draft.json"
SUBSCRIPTION = "sub_bench"
PERIOD_START = datetime(2026, 1, 1, tzinfo=UTC)
PERIOD_END = datetime(2026, 2, 1, tzinfo=UTC)

CATALOG = {
    "billing_entities": [{"code": "bench", "name": "Bench", "invoice_prefix": "BENCH"}],
    "customers": [{"external_id": "cust_bench", "billing_entity_code": "bench"}],
    "billable_metrics": [
        {"code": "api_calls", "aggregation_type": "count"},
        {"code": "transfer_gb", "aggregation_type": "sum", "field_name": "gb"},
    ],
    "plans": [
        {
            "code": "bench",
            "amount_cents": 10_000,
            "charges": [
                {
                    "billable_metric_code": "api_calls",
                    "charge_model": "standard",
                    "properties": {"amount": "0.0001"},
                },
                {
                    "billable_metric_code": "transfer_gb",
                    "charge_model": "graduated",
                    "properties": {
                        "graduated_ranges": [
                            {"from_value": 0, "to_value": 1000, "per_unit_amount": "0.09"},
                            {"from_value": 1000, "to_value": None, "per_unit_amount": "0.05"},
                        ]
                    },
                },
            ],
        }
    ],
    "subscriptions": [
        {
            "external_id": SUBSCRIPTION,
            "customer_external_id": "cust_bench",
            "plan_code": "bench",
            "started_at": "2025-01-01T00:00:00Z",
        }
    ],
}


def _fresh_schema(server_url: str) -> str:
    admin = sqlalchemy.create_engine(server_url)
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {SCHEMA}"))
    admin.dispose()
    separator = "&" if "?" in server_url else "?"
    return f"{server_url}{separator}options={quote(f'-csearch_path={SCHEMA}')}"


def _copy_events(engine: sqlalchemy.Engine, count: int) -> float:
    """COPY ``count`` events spread over January; returns the seconds it took."""
    step = (PERIOD_END - PERIOD_START - timedelta(seconds=1)) / max(count, 1)
    started = time.perf_counter()
    pooled = engine.raw_connection()
    raw = pooled.driver_connection  # the psycopg connection, for COPY
    assert raw is not None
    try:
        cursor = raw.cursor()
        columns = (
            "subscription_external_id, transaction_id, code, timestamp, properties, "
            "number_value, text_value"
        )
        with cursor.copy(f"COPY usage_events ({columns}) FROM STDIN") as copy:
            for index in range(count):
                row: tuple[object, ...]
                at = PERIOD_START + step * index
                if index % 2:
                    gb = f"{(index % 997) / 100:.2f}"
                    row = (
                        SUBSCRIPTION,
                        f"t{index}",
                        "transfer_gb",
                        at,
                        f'{{"gb": {gb}}}',
                        gb,
                        None,
                    )
                else:
                    row = (SUBSCRIPTION, f"t{index}", "api_calls", at, "{}", None, None)
                copy.write_row(row)
        raw.commit()
        raw.autocommit = True
        cursor.execute("VACUUM ANALYZE usage_events")
    finally:
        pooled.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--url", default=os.environ.get("BILLING_TEST_POSTGRES_URL", DEFAULT_URL))
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    url = _fresh_schema(args.url)
    upgrade(url)
    engine = make_engine(url)
    load_catalog(engine, CATALOG)
    load_seconds = _copy_events(engine, args.events)
    print(f"loaded {args.events:,} events in {load_seconds:.1f}s")

    draft = create_draft(engine, SUBSCRIPTION, PERIOD_START, PERIOD_END)
    timings = []
    for _ in range(args.runs):
        started = time.perf_counter()
        invoice = refresh_draft(engine, draft.id).invoice
        timings.append(time.perf_counter() - started)
    events_billed = sum(fee.events_count for fee in invoice.fees)
    assert events_billed == args.events, (events_billed, args.events)

    result = {
        "benchmark": "refresh_draft",
        "events": args.events,
        "runs": args.runs,
        "median_seconds": round(statistics.median(timings), 4),
        "max_seconds": round(max(timings), 4),
        "timings_seconds": [round(t, 4) for t in timings],
        "fees_amount_cents": invoice.fees_amount_cents,
        "database": engine.dialect.name,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    engine.dispose()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"refresh_draft over {args.events:,} events: median {result['median_seconds']:.3f}s, "
        f"max {result['max_seconds']:.3f}s ({args.runs} runs) -> {args.output}"
    )


if __name__ == "__main__":
    main()
