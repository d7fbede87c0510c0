"""Benchmark: usage ingestion as batched signals vs a direct bulk insert.

Against an embedded dev server and a fresh PostgreSQL schema, with one in-process worker:

1. **signals**: P open billing periods (this month) receive E usage events as ``add_usage``
   signals of up to 1,000 events; timed from the first signal sent until all E rows are
   in ``usage_events`` (the workflow merges queued signals into one ``record_usage``
   activity of up to 2,000 events; dedup on (subscription, transaction id)).
2. **replay**: the same signals again; once every period has counted them as duplicates
   the table must hold the same E rows (asserted).
3. **direct**: the same events for other subscriptions through ``services.usage.record_usage``
   in batches of 1,000 on one connection, a commit each (on PostgreSQL: COPY straight into
   ``usage_events`` inside a savepoint; a batch holding a known transaction id, like the
   replay, goes through a staging table and INSERT ... SELECT ... ON CONFLICT DO NOTHING),
   then replayed (must add none, asserted).
4. **raw COPY**: the reference, PostgreSQL's own speed: the same events for other
   subscriptions, with the values the store extracts computed beforehand, in one
   ``COPY usage_events FROM STDIN`` and one commit (no dedupe, no validation).

The senders' events are built before the timed part and frozen out of the garbage
collector (``gc.freeze()``): a worker in production never holds its senders' objects,
and every full collection of the in-process worker would walk them (bench/README.md).

The summary gives events/s of all three and the ratios signals/raw and direct/raw. The
signal and direct phases also print the CPU seconds used by this process (worker and
sender), the dev server and PostgreSQL, per event; PostgreSQL's figure counts every
``postgres`` process on the machine, so it is only usable when nothing else uses the server.

    .venv/bin/python bench/ingest.py                      # 100,000 events, 10 periods
    .venv/bin/python bench/ingest.py --events 1000000
    .venv/bin/python bench/ingest.py --smoke              # 2,000 events

Writes ``bench/results/ingest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy
from _stack import (
    CpuMeter,
    bench_parser,
    bounded_gather,
    dev_server,
    finish,
    fresh_schema,
    load_average,
    load_bench_catalog,
    machine,
    stop_cleanly_on_sigterm,
)
from sqlalchemy import text
from temporalio.client import Client, WorkflowHandle

from billing.models import UsageEvent
from billing.usage import AcceptedEvent, accept_event
from services.catalog import get_billing_context
from services.usage import record_usage
from starter.periods import start_period
from worker import ACTIVITY_THREADS, build_worker, tune_garbage_collection
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import MAX_USAGE_BATCH, AddUsage, BillingPeriodInput, PeriodView

SIGNALS_IN_FLIGHT = 16


def this_month() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    end = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def batches_for(subscription: str, start: datetime, count: int) -> list[AddUsage]:
    events = [
        UsageEvent(
            transaction_id=f"tx-{index}",
            external_subscription_id=subscription,
            code="api_calls" if index % 2 else "storage_gb",
            timestamp=start + timedelta(milliseconds=index),
            properties={} if index % 2 else {"gb": "0.5"},
        )
        for index in range(count)
    ]
    return [
        AddUsage(events=events[i : i + MAX_USAGE_BATCH])
        for i in range(0, len(events), MAX_USAGE_BATCH)
    ]


def count_events(engine: sqlalchemy.Engine, prefix: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(*) FROM usage_events WHERE subscription_external_id LIKE :p"),
                {"p": f"{prefix}%"},
            ).scalar_one()
        )


def _cpu_per_event(cpu: dict[str, float], events: int) -> str:
    return ", ".join(
        f"{name} {seconds:.1f} s ({seconds / events * 1e6:.0f} us per event)"
        for name, seconds in cpu.items()
    )


async def views(handles: list[WorkflowHandle[Any, Any]]) -> list[PeriodView]:
    results = []
    for handle in handles:
        try:
            results.append(await handle.query(BillingPeriodWorkflow.invoice))
        except Exception:  # a query racing a continue-as-new: ask again next time
            results.append(None)
    return [v for v in results if v is not None]


async def wait_until(check: Any, timeout: float, what: str) -> float:
    began = time.monotonic()
    while True:
        if await check():
            return time.monotonic()
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
        await asyncio.sleep(0.05)


async def send_all(
    client: Client, plan: list[tuple[str, AddUsage]], handles: dict[str, WorkflowHandle[Any, Any]]
) -> None:
    await bounded_gather(
        [handles[workflow_id].signal("add_usage", batch) for workflow_id, batch in plan],
        SIGNALS_IN_FLIGHT,
    )


async def run_signals(
    client: Client, engine: sqlalchemy.Engine, args: argparse.Namespace
) -> dict[str, Any]:
    start, end = this_month()
    per_period = args.events // args.periods
    total = per_period * args.periods
    subscriptions = [f"sig_{index:04d}" for index in range(args.periods)]
    handles: dict[str, WorkflowHandle[Any, Any]] = {}
    plan: list[tuple[str, AddUsage]] = []
    per_sub = {sub: batches_for(sub, start, per_period) for sub in subscriptions}
    for position in range(max(len(b) for b in per_sub.values())):  # round robin over periods
        for sub in subscriptions:
            if position < len(per_sub[sub]):
                plan.append((sub, per_sub[sub][position]))
    # The senders' events are other systems' objects: kept out of the worker's garbage
    # collections, which would otherwise walk all of them (a worker in its own process
    # never holds them).
    gc.freeze()

    task_queue = "bench-ingest"
    async with httpx.AsyncClient() as http:
        with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS) as executor:
            worker = build_worker(client, engine, http, task_queue=task_queue, executor=executor)
            async with worker:
                for sub in subscriptions:
                    handles[sub] = await start_period(
                        client,
                        BillingPeriodInput(
                            subscription_external_id=sub, period_start=start, period_end=end
                        ),
                        task_queue=task_queue,
                    )
                    handles[sub] = client.get_workflow_handle(handles[sub].id)

                async def settled() -> bool:  # every period answers: its first task has run
                    return len(await views(list(handles.values()))) == len(handles)

                await wait_until(settled, 60, "periods open")
                meter = CpuMeter()
                began = time.monotonic()
                await send_all(client, plan, handles)
                sent = time.monotonic()

                async def stored() -> bool:
                    return await asyncio.to_thread(count_events, engine, "sig_") >= total

                done = await wait_until(stored, args.timeout, f"{total} events stored")
                seconds = done - began
                cpu = meter.used()
                print(
                    f"  signals: {total:,} events in {len(plan)} signals to {args.periods} periods "
                    f"stored in {seconds:.2f}s (sent in {sent - began:.2f}s) = "
                    f"{total / seconds:,.0f} events/s; load {load_average()}",
                    flush=True,
                )
                print(f"  CPU seconds: {_cpu_per_event(cpu, total)}", flush=True)

                replay_began = time.monotonic()
                await send_all(client, plan, handles)

                async def replayed() -> bool:
                    vs = await views(list(handles.values()))
                    return len(vs) == len(handles) and sum(v.events_duplicated for v in vs) >= total

                replay_done = await wait_until(replayed, args.timeout, "replay counted")
                after_replay = await asyncio.to_thread(count_events, engine, "sig_")
                final_views = await views(list(handles.values()))
                assert after_replay == total, (after_replay, total)
                accepted = sum(v.events_accepted for v in final_views)
                duplicates = sum(v.events_duplicated for v in final_views)
                assert accepted == total and duplicates == total, (accepted, duplicates)
                print(
                    f"  replay of the same {total:,} events: {after_replay - total} added, "
                    f"{duplicates:,} counted as duplicates, in {replay_done - replay_began:.2f}s",
                    flush=True,
                )
                runs = 0
                for handle in handles.values():
                    async for _ in client.list_workflows(f"WorkflowId = '{handle.id}'"):
                        runs += 1
                for handle in handles.values():
                    await handle.terminate("benchmark over")
    return {
        "events": total,
        "periods": args.periods,
        "signals": len(plan),
        "events_per_signal": MAX_USAGE_BATCH,
        "signals_in_flight": SIGNALS_IN_FLIGHT,
        "seconds": round(seconds, 3),
        "send_seconds": round(sent - began, 3),
        "events_per_second": round(total / seconds),
        "cpu_seconds": cpu,
        "replay_added": after_replay - total,
        "replay_seconds": round(replay_done - replay_began, 3),
        "replay_events_per_second": round(total / (replay_done - replay_began)),
        "workflow_runs": runs,
        "load_average_after": load_average(),
    }


def run_direct(engine: sqlalchemy.Engine, args: argparse.Namespace) -> dict[str, Any]:
    start, end = this_month()
    per_period = args.events // args.periods
    total = per_period * args.periods
    work = []
    for index in range(args.periods):
        sub = f"dir_{index:04d}"
        work += [(sub, batch.events) for batch in batches_for(sub, start, per_period)]
    meter = CpuMeter()
    began = time.monotonic()
    accepted = sum(record_usage(engine, sub, start, end, events).accepted for sub, events in work)
    seconds = time.monotonic() - began
    cpu = meter.used()
    replay_began = time.monotonic()
    replay_accepted = sum(
        record_usage(engine, sub, start, end, events).accepted for sub, events in work
    )
    replay_seconds = time.monotonic() - replay_began
    assert accepted == total and replay_accepted == 0, (accepted, replay_accepted)
    assert count_events(engine, "dir_") == total
    print(
        f"  direct record_usage (1 connection, batches of {MAX_USAGE_BATCH}): {total:,} events "
        f"in {seconds:.2f}s = {total / seconds:,.0f} events/s; replay added {replay_accepted} "
        f"in {replay_seconds:.2f}s; load {load_average()}",
        flush=True,
    )
    print(f"  CPU seconds: {_cpu_per_event(cpu, total)}", flush=True)
    return {
        "events": total,
        "batch": MAX_USAGE_BATCH,
        "seconds": round(seconds, 3),
        "events_per_second": round(total / seconds),
        "cpu_seconds": cpu,
        "replay_added": replay_accepted,
        "replay_seconds": round(replay_seconds, 3),
        "load_average_after": load_average(),
    }


RAW_COPY = (
    'COPY usage_events (subscription_external_id, transaction_id, code, "timestamp", '
    "properties, number_value, text_value) FROM STDIN"
)


def run_raw_copy(engine: sqlalchemy.Engine, args: argparse.Namespace) -> dict[str, Any]:
    """The reference: the same events COPYed straight into ``usage_events``, one commit."""
    start, end = this_month()
    per_period = args.events // args.periods
    total = per_period * args.periods
    rows: list[tuple[Any, ...]] = []
    for index in range(args.periods):
        sub = f"raw_{index:04d}"
        context = get_billing_context(engine, sub)
        for batch in batches_for(sub, start, per_period):
            for event in batch.events:
                verdict = accept_event(event, context, start, end)
                assert isinstance(verdict, AcceptedEvent)
                rows.append(
                    (
                        sub,
                        event.transaction_id,
                        event.code,
                        event.timestamp,
                        json.dumps(event.properties),
                        verdict.number_value,
                        verdict.text_value,
                    )
                )
    pooled = engine.raw_connection()
    try:
        driver = pooled.driver_connection
        assert driver is not None
        began = time.monotonic()
        with driver.cursor() as cursor, cursor.copy(RAW_COPY) as copy:
            for row in rows:
                copy.write_row(row)
        driver.commit()
        seconds = time.monotonic() - began
    finally:
        pooled.close()
    assert count_events(engine, "raw_") == total
    print(
        f"  raw COPY (1 statement, 1 commit, values extracted beforehand): {total:,} events "
        f"in {seconds:.2f}s = {total / seconds:,.0f} events/s; load {load_average()}",
        flush=True,
    )
    return {
        "events": total,
        "seconds": round(seconds, 3),
        "events_per_second": round(total / seconds),
        "load_average_after": load_average(),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "benchmark": "ingest",
        "events": args.events,
        "periods": args.periods,
        "worker": "1 in-process worker (worker.build_worker); the sending client shares its process",
        **machine(),
    }
    print(
        f"ingestion of {args.events:,} events into {args.periods} periods "
        f"(load {result['load_average_at_start']})",
        flush=True,
    )
    subscriptions = [f"sig_{i:04d}" for i in range(args.periods)]
    subscriptions += [f"dir_{i:04d}" for i in range(args.periods)]
    subscriptions += [f"raw_{i:04d}" for i in range(args.periods)]
    with fresh_schema(args.url, "bench_ingest") as url:
        engine = load_bench_catalog(url, subscriptions, "http://127.0.0.1:9/unused")
        tune_garbage_collection()  # as worker.run_worker does
        try:
            async with dev_server() as client:
                result["signals"] = await run_signals(client, engine, args)
            result["direct"] = await asyncio.to_thread(run_direct, engine, args)
            result["raw_copy"] = await asyncio.to_thread(run_raw_copy, engine, args)
        finally:
            engine.dispose()
    signals, direct, raw = (
        result[name]["events_per_second"] for name in ("signals", "direct", "raw_copy")
    )
    result["ratio_to_direct"] = round(signals / direct, 3)
    result["signals_to_raw_copy"] = round(signals / raw, 3)
    result["direct_to_raw_copy"] = round(direct / raw, 3)
    return result


def main() -> None:
    parser = bench_parser(__doc__, "2,000 events")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--periods", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    stop_cleanly_on_sigterm()
    if args.smoke:
        args.events, args.periods, args.timeout = 2_000, 2, 60
    result = asyncio.run(bench(args))
    finish(
        "ingest",
        result,
        args.output,
        f"signals {result['signals']['events_per_second']:,} events/s, direct "
        f"{result['direct']['events_per_second']:,} events/s, raw COPY "
        f"{result['raw_copy']['events_per_second']:,} events/s; signals/direct "
        f"{result['ratio_to_direct']}, signals/raw COPY {result['signals_to_raw_copy']}, "
        f"direct/raw COPY {result['direct_to_raw_copy']}; "
        f"replays added {result['signals']['replay_added']} / {result['direct']['replay_added']}",
    )


if __name__ == "__main__":
    main()
