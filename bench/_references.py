"""The close's references beside the floor (bench/_floor.py): the plain-SQL phase, and the
ratios of the close to the floor, to plain SQL and to floor + plain SQL.

**Plain SQL** runs the store steps of a lean period without Temporal, on as many threads
as a worker has activity slots: ``record_usage``, ``draft_invoice``, ``finalize_invoice``,
and for the webhook what the delivery activity reads and writes (``delivery_to_send``,
``record_attempt``; no HTTP).

**Floor + plain SQL** is what a close with no overhead of its own would cost: Temporal's
orchestration of the same shape (the floor) plus the database work (plain SQL), one after
the other. Its time is the floor's seconds plus the plain-SQL seconds for the same number
of periods, its CPU the sum of both phases' CPU (every process measured: bench process,
worker processes, dev server, PostgreSQL; also given without PostgreSQL, whose CPU is
read machine-wide and so includes other jobs on a shared server). Ratios:

- ``ratio_to_floor_plus_plain_sql`` = close invoices/s / (periods / (floor s + plain SQL s)):
  1.0 is a close that costs nothing beyond the two, lower is the close's own overhead;
- ``cpu_ratio_to_floor_plus_plain_sql`` = close CPU per period / (floor + plain SQL) CPU
  per period: 1.0 is no overhead, higher is the close's own CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import sqlalchemy
from _stack import CpuMeter, load_average, percentile

from billing.models import UsageEvent
from services import invoices as store_invoices
from services import usage as store_usage
from services import webhooks as store_webhooks
from services.finalization import finalize_invoice


def run_plain_sql(
    engine: sqlalchemy.Engine,
    subscriptions: list[str],
    usage: Callable[[str], list[UsageEvent]],
    period: tuple[datetime, datetime],
    threads: int,
) -> dict[str, Any]:
    """The store steps of one lean period per subscription (``usage``: its one batch)."""
    timings: list[float] = []
    start, end = period

    def one(subscription: str) -> None:
        t0 = time.monotonic()
        store_usage.record_usage(engine, subscription, start, end, usage(subscription))
        draft = store_invoices.draft_invoice(engine, subscription, start, end).invoice
        outcome = finalize_invoice(engine, draft.id, datetime.now(UTC))
        for delivery_id in outcome.delivery_ids:
            store_webhooks.delivery_to_send(engine, delivery_id)
            store_webhooks.record_attempt(
                engine,
                delivery_id,
                http_status=200,
                error=None,
                succeeded=True,
                final=True,
                at=datetime.now(UTC),
            )
        timings.append(time.monotonic() - t0)

    cpu = CpuMeter()
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, subscriptions))
    seconds = time.monotonic() - began
    result = {
        "periods": len(subscriptions),
        "threads": threads,
        "store_steps": "record_usage, draft_invoice, finalize_invoice, "
        "delivery_to_send + record_attempt",
        "seconds": round(seconds, 2),
        "invoices_per_second": round(len(subscriptions) / seconds, 1),
        "latency_p50_seconds": round(percentile(timings, 0.5), 4),
        "latency_p99_seconds": round(percentile(timings, 0.99), 4),
        "load_average_after": load_average(),
        "cpu_seconds": cpu.used(),
    }
    print(
        f"  plain SQL: {len(subscriptions):,} periods in {result['seconds']}s = "
        f"{result['invoices_per_second']}/s on {threads} threads; load {result['load_average_after']}; "
        f"CPU s {result['cpu_seconds']}",
        flush=True,
    )
    return result


def cpu_total(phase: dict[str, Any], *, postgres: bool = True) -> float:
    """CPU seconds of every process a phase measured (PostgreSQL's or not)."""
    return float(sum(v for k, v in phase["cpu_seconds"].items() if postgres or k != "postgres"))


def ratios(result: dict[str, Any]) -> dict[str, Any]:
    """close / floor, close / plain SQL and close / (floor + plain SQL); see the module doc."""
    close = result["close"]
    periods = result["periods"]
    found: dict[str, Any] = {}
    if "floor" in result:
        found["ratio_to_floor"] = round(
            close["invoices_per_second"] / result["floor"]["invoices_per_second"], 3
        )
        found["cpu_ratio_to_floor"] = round(cpu_total(close) / cpu_total(result["floor"]), 3)
    if "plain_sql" in result:
        found["ratio_to_plain_sql"] = round(
            close["invoices_per_second"] / result["plain_sql"]["invoices_per_second"], 3
        )
    if "floor" in result and "plain_sql" in result:
        floor, plain = result["floor"], result["plain_sql"]
        seconds = floor["seconds"] + plain["seconds"]
        bound = {
            "seconds": round(seconds, 2),
            "invoices_per_second": round(periods / seconds, 1),
            "cpu_ms_per_period": round(1000 * (cpu_total(floor) + cpu_total(plain)) / periods, 1),
            "cpu_ms_per_period_without_postgres": round(
                1000
                * (cpu_total(floor, postgres=False) + cpu_total(plain, postgres=False))
                / periods,
                1,
            ),
        }
        found["floor_plus_plain_sql"] = bound
        found["ratio_to_floor_plus_plain_sql"] = round(
            close["invoices_per_second"] / bound["invoices_per_second"], 3
        )
        found["cpu_ratio_to_floor_plus_plain_sql"] = round(
            1000 * cpu_total(close) / periods / bound["cpu_ms_per_period"], 3
        )
        found["cpu_ratio_to_floor_plus_plain_sql_without_postgres"] = round(
            1000
            * cpu_total(close, postgres=False)
            / periods
            / bound["cpu_ms_per_period_without_postgres"],
            3,
        )
    return found
