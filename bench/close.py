"""Benchmark: month-end close of N billing periods, against two references.

Against an embedded dev server (in-memory, headless, free ports) and a fresh PostgreSQL
schema, with one in-process worker (``worker.build_worker``) and a local WebhookSink:

1. **floor**: N do-nothing ``FloorPeriod`` workflows (bench/_floor.py) with the same usage
   signal and search attributes, the same activities (4 regular), search-attribute
   upserts and grace timer; ``--local-floor`` adds the same floor with 2 of its store
   steps as local activities (an experiment);
2. **close**: N ``BillingPeriodWorkflow`` s (January, already over) started at once, each
   with a few usage events (signal-with-start), through draft, a short grace period,
   finalization and the ``invoice.created`` webhook received by the sink (a process of its
   own, bench/_sink.py);
3. **plain SQL**: the same database writes without Temporal (March periods):
   ``record_usage``, ``create_draft``, ``finalize_invoice``, ``record_attempt``, on as many
   threads as the worker has activity slots.

    .venv/bin/python bench/close.py                  # 10,000 periods
    .venv/bin/python bench/close.py --periods 1000
    .venv/bin/python bench/close.py --smoke          # 20 periods, a few seconds

Prints invoices/s, p50/p99 period latency (start sent -> webhook received) and the ratios,
and writes them to ``bench/results/close.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy
from _floor import FloorPeriod, floor_noop, make_done_activity
from _stack import (
    SECRET,
    CpuMeter,
    bench_parser,
    bounded_gather,
    dev_server,
    finish,
    fresh_schema,
    load_average,
    load_bench_catalog,
    machine,
    percentile,
    spawn_workers,
    stop_cleanly_on_sigterm,
)
from sqlalchemy import text
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import Worker

from billing.models import UsageEvent
from services import invoices as store_invoices
from services import usage as store_usage
from services import webhooks as store_webhooks
from starter.periods import period_workflow_id
from worker import (
    ACTIVITY_THREADS,
    build_worker,
    share_workflow_code,
    tune_garbage_collection,
)
from workflows import search_attributes
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import AddUsage, BillingPeriodInput

JANUARY = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
MARCH = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
METRICS_PORT = 9470  # worker process i serves Prometheus metrics on METRICS_PORT + i
START_CONCURRENCY = 100  # workflow starts in flight from the bench's client


def usage_events(subscription: str, period_start: datetime, count: int) -> list[UsageEvent]:
    events = []
    for index in range(count):
        at = period_start + timedelta(hours=1 + index)
        if index % 3 == 2:
            events.append(
                UsageEvent(
                    transaction_id=f"{subscription}-{at:%m}-{index}",
                    external_subscription_id=subscription,
                    code="storage_gb",
                    timestamp=at,
                    properties={"gb": "1.5"},
                )
            )
        else:
            events.append(
                UsageEvent(
                    transaction_id=f"{subscription}-{at:%m}-{index}",
                    external_subscription_id=subscription,
                    code="api_calls",
                    timestamp=at,
                    properties={},
                )
            )
    return events


class Finish:
    """Records when each period ended; wakes the waiter when all of them did."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.ended: dict[str, float] = {}
        self.all_done = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def mark(self, key: str, at: float) -> None:
        if key not in self.ended:
            self.ended[key] = at
            if len(self.ended) >= self.expected:
                self._loop.call_soon_threadsafe(self.all_done.set)

    def mark_threadsafe(self, key: str, at: float) -> None:
        self._loop.call_soon_threadsafe(self.mark, key, at)


def summarise(
    name: str,
    started: dict[str, float],
    finish: Finish,
    began: float,
    launched: float,
    cpu: CpuMeter,
) -> dict[str, Any]:
    ended = max(finish.ended.values()) if finish.ended else time.monotonic()
    latencies = [finish.ended[k] - started[k] for k in finish.ended if k in started]
    seconds = ended - began
    result = {
        "periods": finish.expected,
        "completed": len(finish.ended),
        "seconds": round(seconds, 2),
        "launch_seconds": round(launched - began, 2),
        "invoices_per_second": round(len(finish.ended) / seconds, 1) if seconds else None,
        "latency_p50_seconds": round(percentile(latencies, 0.5), 3),
        "latency_p99_seconds": round(percentile(latencies, 0.99), 3),
        "load_average_after": load_average(),
        "cpu_seconds": cpu.used(),
    }
    print(
        f"  {name}: {result['completed']:,}/{finish.expected:,} periods in "
        f"{result['seconds']}s (launch {result['launch_seconds']}s) = "
        f"{result['invoices_per_second']}/s; latency p50 {result['latency_p50_seconds']}s, "
        f"p99 {result['latency_p99_seconds']}s; load {result['load_average_after']}; "
        f"CPU s {result['cpu_seconds']}",
        flush=True,
    )
    return result


async def read_sink(stdout: asyncio.StreamReader, finish: Finish) -> None:
    """Marks each period whose ``invoice.created`` webhook the receiver process accepted."""
    while line := await stdout.readline():
        subscription, at = line.decode().split()
        finish.mark(subscription, float(at))


async def wait_all(finish: Finish, timeout: float, progress: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not finish.all_done.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            print(f"  timeout after {timeout:.0f}s: {progress()}", flush=True)
            return
        try:
            await asyncio.wait_for(finish.all_done.wait(), timeout=min(15.0, remaining))
        except TimeoutError:
            print(f"  ... {progress()}", flush=True)


async def run_floor(
    client: Client,
    subscriptions: list[str],
    events: int,
    grace: int,
    executor: ThreadPoolExecutor,
    timeout: float,
    *,
    local_store_steps: bool = False,
) -> dict[str, Any]:
    finish = Finish(len(subscriptions))
    share_workflow_code([FloorPeriod])  # as build_worker does for ours
    shape = "local" if local_store_steps else "regular"
    task_queue = f"bench-floor-{shape}"
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[FloorPeriod],
        activities=[floor_noop, make_done_activity(finish.mark_threadsafe)],
        activity_executor=executor,
        max_concurrent_activities=ACTIVITY_THREADS,
    )
    started: dict[str, float] = {}

    async def start(subscription: str) -> None:
        workflow_id = f"floor-{shape}/{subscription}"
        usage = AddUsage(events=usage_events(subscription, JANUARY[0], events))
        started[workflow_id] = time.monotonic()
        await client.start_workflow(
            "FloorPeriod",
            {"grace_seconds": grace, "local_store_steps": local_store_steps},
            id=workflow_id,
            task_queue=task_queue,
            start_signal="add_usage",
            start_signal_args=[usage],
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=search_attributes.at_start(
                BillingPeriodInput(
                    subscription_external_id=subscription,
                    period_start=JANUARY[0],
                    period_end=JANUARY[1],
                )
            ),
        )

    async with worker:
        cpu = CpuMeter()
        began = time.monotonic()
        await bounded_gather([start(s) for s in subscriptions], START_CONCURRENCY)
        launched = time.monotonic()
        await wait_all(finish, timeout, lambda: f"{len(finish.ended):,} done")
        name = "floor (local store steps)" if local_store_steps else "floor"
        return summarise(name, started, finish, began, launched, cpu)


async def run_close(
    client: Client,
    engine: sqlalchemy.Engine,
    sink_finish: Finish,
    subscriptions: list[str],
    events: int,
    grace: int,
    executor: ThreadPoolExecutor,
    timeout: float,
    *,
    url: str,
    worker_processes: int = 0,
) -> dict[str, Any]:
    task_queue = "bench-close"
    started: dict[str, float] = {}

    async def start(subscription: str) -> None:
        period = BillingPeriodInput(
            subscription_external_id=subscription,
            period_start=JANUARY[0],
            period_end=JANUARY[1],
            grace_period_seconds=grace,
            refresh_debounce_seconds=0,
            webhook_retry_window_seconds=600,
        )
        usage = AddUsage(events=usage_events(subscription, JANUARY[0], events))
        started[subscription] = time.monotonic()
        # start_period plus the first usage batch in the same call (signal-with-start).
        await client.start_workflow(
            BillingPeriodWorkflow.run,
            period,
            id=period_workflow_id(subscription, JANUARY[0]),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal="add_usage",
            start_signal_args=[usage],
            search_attributes=search_attributes.at_start(period),  # as starter.periods does
        )

    async with contextlib.AsyncExitStack() as stack:
        if worker_processes:
            # Worker processes of their own (bench/_worker.py = worker.build_worker), as
            # `billing worker --processes N` runs them; this process only starts periods.
            ready = await stack.enter_async_context(
                spawn_workers(
                    client,
                    url,
                    task_queue,
                    [["--metrics-port", str(METRICS_PORT + i)] for i in range(worker_processes)],
                )
            )
            pids = [worker["pid"] for worker in ready]
        else:
            pids = []
            http = await stack.enter_async_context(
                httpx.AsyncClient(limits=httpx.Limits(max_connections=32))
            )
            worker = build_worker(client, engine, http, task_queue=task_queue, executor=executor)
            await stack.enter_async_context(worker)
        cpu = CpuMeter(worker_pids=pids)
        began = time.monotonic()
        await bounded_gather([start(s) for s in subscriptions], START_CONCURRENCY)
        launched = time.monotonic()
        await wait_all(sink_finish, timeout, lambda: f"{len(sink_finish.ended):,} webhooks")
        result = summarise("close", started, sink_finish, began, launched, cpu)
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT status, count(*) FROM invoices WHERE period_start = :start GROUP BY status"
            ),
            {"start": JANUARY[0]},
        ).all()
    result["invoices_by_status"] = {status: count for status, count in rows}
    result["worker_processes"] = worker_processes or "in the bench process"
    result["worker_max_concurrent_activities"] = ACTIVITY_THREADS
    return result


def run_plain_sql(
    engine: sqlalchemy.Engine, subscriptions: list[str], events: int, threads: int
) -> dict[str, Any]:
    timings: list[float] = []

    def one(subscription: str) -> None:
        t0 = time.monotonic()
        batch = usage_events(subscription, MARCH[0], events)
        store_usage.record_usage(engine, subscription, MARCH[0], MARCH[1], batch)
        draft = store_invoices.create_draft(engine, subscription, MARCH[0], MARCH[1])
        outcome = store_invoices.finalize_invoice(engine, draft.id, datetime.now(UTC))
        for delivery_id in outcome.delivery_ids:
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


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    subscriptions = [f"sub_{index:06d}" for index in range(args.periods)]
    result: dict[str, Any] = {
        "benchmark": "close",
        "periods": args.periods,
        "events_per_period": args.events,
        "grace_period_seconds": args.grace,
        "worker": (
            f"{args.worker_processes} worker processes (bench/_worker.py)"
            if args.worker_processes
            else "1 worker in the bench process (worker.build_worker)"
        )
        + "; webhook receiver in its own process (bench/_sink.py)",
        **machine(),
    }
    print(
        f"close of {args.periods:,} periods, {args.events} events each, grace {args.grace}s "
        f"(load {result['load_average_at_start']})",
        flush=True,
    )
    with fresh_schema(args.url, "bench_close") as url:
        loop_finish = Finish(len(subscriptions))

        # The receiver runs in a process of its own, as a customer's endpoint would.
        sink = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).with_name("_sink.py")),
            SECRET,
            stdout=asyncio.subprocess.PIPE,
        )
        assert sink.stdout is not None
        sink_port = int((await sink.stdout.readline()).split()[1])
        reader = asyncio.create_task(read_sink(sink.stdout, loop_finish))
        t0 = time.monotonic()
        engine = load_bench_catalog(url, subscriptions, f"http://127.0.0.1:{sink_port}/")
        print(
            f"  catalog of {len(subscriptions):,} subscriptions loaded in {time.monotonic() - t0:.1f}s"
        )
        tune_garbage_collection()  # as worker.run_worker does
        try:
            async with dev_server() as client:
                with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS) as executor:
                    if not args.skip_floor:
                        result["floor"] = await run_floor(
                            client, subscriptions, args.events, args.grace, executor, args.timeout
                        )
                    if args.local_floor:
                        result["floor_local_store_steps"] = await run_floor(
                            client,
                            subscriptions,
                            args.events,
                            args.grace,
                            executor,
                            args.timeout,
                            local_store_steps=True,
                        )
                    result["close"] = await run_close(
                        client,
                        engine,
                        loop_finish,
                        subscriptions,
                        args.events,
                        args.grace,
                        executor,
                        args.timeout,
                        url=url,
                        worker_processes=args.worker_processes,
                    )
            if not args.skip_plain_sql:
                result["plain_sql"] = await asyncio.to_thread(
                    run_plain_sql, engine, subscriptions, args.events, ACTIVITY_THREADS
                )
        finally:
            sink.terminate()
            await sink.wait()
            reader.cancel()
            engine.dispose()
    ours = result["close"]["invoices_per_second"]
    if "floor" in result:
        result["ratio_to_floor"] = round(ours / result["floor"]["invoices_per_second"], 3)
    if "plain_sql" in result:
        result["ratio_to_plain_sql"] = round(ours / result["plain_sql"]["invoices_per_second"], 3)
    if args.periods < 10_000:
        result["extrapolated_10000_seconds"] = round(10_000 / ours, 1)
    return result


def main() -> None:
    parser = bench_parser(__doc__, "20 periods")
    parser.add_argument("--periods", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=3, help="usage events per period")
    parser.add_argument("--grace", type=int, default=2, help="grace period in seconds")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per phase")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--skip-plain-sql", action="store_true")
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=0,
        help="run the close on N worker processes (default: one worker in the bench process)",
    )
    parser.add_argument(
        "--local-floor",
        action="store_true",
        help="also run the floor with two store steps as local activities (experiment)",
    )
    args = parser.parse_args()
    stop_cleanly_on_sigterm()
    if args.smoke:
        args.periods, args.grace, args.timeout = 20, 1, 60
    result = asyncio.run(bench(args))
    summary = f"{result['close']['invoices_per_second']} invoices/s"
    if "ratio_to_floor" in result:
        summary += f", {result['ratio_to_floor']}x the orchestration floor"
    if "ratio_to_plain_sql" in result:
        summary += f", {result['ratio_to_plain_sql']}x plain SQL"
    if "extrapolated_10000_seconds" in result:
        summary += (
            f"; EXTRAPOLATED (linear, not measured): 10,000 periods in "
            f"~{result['extrapolated_10000_seconds']}s"
        )
    finish("close", result, args.output, summary)


if __name__ == "__main__":
    main()
