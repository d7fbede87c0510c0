"""Benchmark: worker memory per open period, and history length under heavy usage.

Against an embedded dev server and a fresh PostgreSQL schema, with the worker in its own
process (bench/_worker.py runs ``worker.build_worker``), so its RSS is its own:

1. **memory**: January periods are started with a one-hour grace period and counted once
   their draft exists (they then wait in the grace timer). Worker RSS (VmRSS) is read
   before, and after each size is reached and has settled; the figure is
   (RSS - RSS before) / open periods. The worker's sticky cache (``max_cached_workflows``)
   bounds how many of them it keeps in memory: reported alongside.
2. **history**: one open period of this month receives E usage events as ``add_usage``
   signals of 1,000; once all are stored, the history length of its current run and its
   number of runs (continue-as-new) are reported.

    .venv/bin/python bench/memory.py                          # 1,000 and 10,000; 100,000 events
    .venv/bin/python bench/memory.py --sizes 1000,3000 --events 100000
    .venv/bin/python bench/memory.py --sizes 1000 --events 5000 --workflow-sandbox on
    .venv/bin/python bench/memory.py --smoke

Writes ``bench/results/memory.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import sqlalchemy
from _stack import (
    bench_parser,
    bounded_gather,
    dev_server,
    finish,
    fresh_schema,
    load_average,
    load_bench_catalog,
    machine,
    rss_kib,
    spawn_workers,
    stop_cleanly_on_sigterm,
    write_result,
)
from close import JANUARY, START_CONCURRENCY
from ingest import batches_for, count_events, this_month
from sqlalchemy import text
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from starter.periods import start_period
from workflows.messages import BillingPeriodInput

TASK_QUEUE = "bench-memory"
SETTLE_SECONDS = 5.0  # after the last draft: the last workflow tasks, then RSS


def drafts(engine: sqlalchemy.Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(*) FROM invoices WHERE status = 'draft'")
            ).scalar_one()
        )


async def open_periods(client: Client, subscriptions: list[str]) -> float:
    """Start the periods (a one-hour grace period); returns the seconds the launch took."""
    began = time.monotonic()

    async def start(subscription: str) -> None:
        await start_period(
            client,
            BillingPeriodInput(
                subscription_external_id=subscription,
                period_start=JANUARY[0],
                period_end=JANUARY[1],
                grace_period_seconds=3600,
            ),
            task_queue=TASK_QUEUE,
        )

    await bounded_gather([start(s) for s in subscriptions], START_CONCURRENCY)
    return time.monotonic() - began


async def measure_memory(
    client: Client, engine: sqlalchemy.Engine, worker_pid: int, args: argparse.Namespace
) -> dict[str, Any]:
    await asyncio.sleep(args.settle)
    before = rss_kib(worker_pid)
    print(f"  worker RSS with no period: {before / 1024:.1f} MiB", flush=True)
    points = []
    opened = 0
    for size in args.sizes:
        subscriptions = [f"mem_{i:06d}" for i in range(opened, size)]
        began = time.monotonic()
        await open_periods(client, subscriptions)
        while (count := await asyncio.to_thread(drafts, engine)) < size:
            if time.monotonic() - began > args.timeout:
                raise TimeoutError(f"only {count} of {size} drafts after {args.timeout:.0f}s")
            await asyncio.sleep(1)
        opened = size
        reached = time.monotonic() - began
        await asyncio.sleep(args.settle)
        rss = rss_kib(worker_pid)
        point = {
            "open_periods": size,
            "worker_rss_kib": rss,
            "kib_per_open_period": round((rss - before) / size, 1),
            "seconds_to_open": round(reached, 1),
            "load_average": load_average(),
        }
        points.append(point)
        print(
            f"  {size:,} periods waiting in their grace timer (opened in {reached:.0f}s): "
            f"worker RSS {rss / 1024:.1f} MiB, {point['kib_per_open_period']} KiB per period; "
            f"load {point['load_average']}",
            flush=True,
        )
    return {"worker_rss_before_kib": before, "points": points}


async def measure_history(
    client: Client, engine: sqlalchemy.Engine, args: argparse.Namespace
) -> dict[str, Any]:
    start, end = this_month()
    subscription = "hist_0000"
    handle = await start_period(
        client,
        BillingPeriodInput(
            subscription_external_id=subscription, period_start=start, period_end=end
        ),
        task_queue=TASK_QUEUE,
    )
    batches = batches_for(subscription, start, args.events)
    began = time.monotonic()
    latest = client.get_workflow_handle(handle.id)
    stored = 0
    progress_at = time.monotonic()

    async def stored_at_least(wanted: int) -> bool:
        """Wait until ``wanted`` events are stored; False when the period stalls."""
        nonlocal stored, progress_at
        while stored < wanted:
            now_stored = await asyncio.to_thread(count_events, engine, "hist_")
            if now_stored > stored:
                stored, progress_at = now_stored, time.monotonic()
            elif time.monotonic() - progress_at > args.stall:
                return False
            if stored < wanted:
                await asyncio.sleep(0.2)
        return True

    stalled = False
    for index, batch in enumerate(batches):
        # At most --outstanding batches sent but not yet stored (0: send them all at once).
        if args.outstanding and not await stored_at_least(
            (index - args.outstanding) * len(batch.events)
        ):
            stalled = True
            break
        await latest.signal("add_usage", batch)
    if not stalled:
        stalled = not await stored_at_least(args.events)
    seconds = time.monotonic() - began
    if stalled:
        failures = 0
        async for event in latest.fetch_history_events():
            failures += event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        await latest.terminate("benchmark over: stalled")
        print(
            f"  history: STALLED after {stored:,} of {args.events:,} events stored "
            f"({failures} workflow task failures in the current run)",
            flush=True,
        )
        return {
            "usage_events": args.events,
            "outstanding_batches": args.outstanding,
            "stalled": True,
            "stored_events": stored,
            "workflow_task_failures": failures,
            "current_run_history_events": None,
            "runs": None,
        }
    await asyncio.sleep(2)  # the last workflow task after the last activity
    description = await latest.describe()
    history_length = description.raw_description.workflow_execution_info.history_length
    history_bytes = description.raw_description.workflow_execution_info.history_size_bytes
    runs = 0
    events_all_runs = 0
    async for execution in client.list_workflows(f"WorkflowId = '{handle.id}'"):
        runs += 1
        run = client.get_workflow_handle(handle.id, run_id=execution.run_id)
        events_all_runs += (
            await run.describe()
        ).raw_description.workflow_execution_info.history_length
    await latest.terminate("benchmark over")
    result = {
        "usage_events": args.events,
        "outstanding_batches": args.outstanding,
        "stalled": False,
        "signals": len(batches),
        "stored_seconds": round(seconds, 2),
        "current_run_history_events": history_length,
        "current_run_history_bytes": history_bytes,
        "runs": runs,
        "history_events_all_runs": events_all_runs,
    }
    print(
        f"  history: {args.events:,} events in {len(batches)} signals stored in {seconds:.1f}s; "
        f"current run {history_length:,} history events ({history_bytes / 1024:.0f} KiB), "
        f"{runs} run(s), {events_all_runs:,} events over all runs",
        flush=True,
    )
    return result


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"benchmark": "memory", **machine()}
    print(
        f"memory at {', '.join(f'{s:,}' for s in args.sizes)} open periods; history after "
        f"{args.events:,} usage events (load {result['load_average_at_start']})",
        flush=True,
    )
    subscriptions = [f"mem_{i:06d}" for i in range(max(args.sizes))] + ["hist_0000"]
    with fresh_schema(args.url, "bench_memory") as url:
        engine = load_bench_catalog(url, subscriptions, "http://127.0.0.1:9/unused")
        try:
            async with dev_server() as client:
                options = []
                if args.max_cached_workflows is not None:
                    options += ["--max-cached-workflows", str(args.max_cached_workflows)]
                if args.workflow_sandbox is not None:
                    options += ["--workflow-sandbox", args.workflow_sandbox]
                if args.default_gc:
                    options.append("--default-gc")
                async with spawn_workers(client, url, TASK_QUEUE, [options]) as (ready,):
                    result["worker"] = ready
                    print(
                        f"  worker pid {ready['pid']}: max_cached_workflows "
                        f"{ready['max_cached_workflows']}, {ready['workflow_runner']}, "
                        f"max_concurrent_workflow_tasks "
                        f"{ready['max_concurrent_workflow_tasks']}",
                        flush=True,
                    )
                    result["memory"] = await measure_memory(client, engine, ready["pid"], args)
                    write_result("memory", result, args.output)  # kept if the rest fails
                    result["history"] = await measure_history(client, engine, args)
        finally:
            engine.dispose()
    return result


def main() -> None:
    parser = bench_parser(__doc__, "20 periods, 5,000 events")
    parser.add_argument("--sizes", default="1000,10000", help="open periods, comma separated")
    parser.add_argument("--events", type=int, default=100_000, help="usage events for history")
    parser.add_argument("--max-cached-workflows", type=int, default=None)
    parser.add_argument(
        "--workflow-sandbox",
        choices=["on", "off"],
        default=None,
        help="the worker's BILLING_WORKFLOW_SANDBOX (default: build_worker's, off)",
    )
    parser.add_argument(
        "--default-gc", action="store_true", help="worker without tune_garbage_collection"
    )
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument(
        "--outstanding",
        type=int,
        default=4,
        help="usage signals sent ahead of what is stored (0: all at once)",
    )
    parser.add_argument("--stall", type=float, default=60, help="seconds without progress")
    parser.add_argument("--settle", type=float, default=SETTLE_SECONDS, help="seconds before RSS")
    args = parser.parse_args()
    stop_cleanly_on_sigterm()
    args.sizes = sorted(int(s) for s in args.sizes.split(","))
    if args.smoke:
        args.sizes, args.events, args.timeout, args.settle = [10, 20], 5_000, 60, 1.0
    result = asyncio.run(bench(args))
    points = result["memory"]["points"]
    finish(
        "memory",
        result,
        args.output,
        ", ".join(f"{p['kib_per_open_period']} KiB/period at {p['open_periods']:,}" for p in points)
        + f" (cache {result['worker']['max_cached_workflows']}); history "
        f"{result['history']['current_run_history_events']} events in the current run, "
        f"{result['history']['runs']} run(s), stalled {result['history']['stalled']}",
    )


if __name__ == "__main__":
    main()
