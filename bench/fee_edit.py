"""Benchmark: fee-edit round trip (``edit_fee_sync`` sent -> recalculated fee returned).

Against an embedded dev server and a fresh PostgreSQL schema, with one worker process
(``--in-process``: the worker in the bench process, beside the editing client and the sink):
a few January periods sit in their draft (grace period of an hour); edits are sent one at
a time, round robin over them, as ``BillingClient`` sends them (the operator priority, then
the ``edit_fee_sync`` update), and each reply is checked (the edited fee carries the
units sent). Measured twice: idle, and while a close of C other periods runs on the same
worker (started at once, 2 s grace, webhooks to a local sink).

    .venv/bin/python bench/fee_edit.py                  # 300 edits, close of 1,000
    .venv/bin/python bench/fee_edit.py --smoke          # 20 edits, close of 20

Writes ``bench/results/fee_edit.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
from _stack import (
    SECRET,
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
from close import JANUARY, START_CONCURRENCY, Finish, usage_events
from sqlalchemy import Engine
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy

from billing.models import Invoice
from config.settings import WORKFLOW_TASK_SLOTS
from starter.periods import give_operator_priority, period_workflow_id, start_period
from starter.webhook_sink import ReceivedWebhook, WebhookSink
from worker import ACTIVITY_THREADS, build_worker, tune_garbage_collection
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import AddUsage, BillingPeriodInput, EditFee, PeriodPhase

CHARGE = "storage_gb"


async def edit_round_trips(
    client: Client,
    handles: list[WorkflowHandle[Any, Any]],
    count: int,
    offset: int,
    operator_priority: bool,
) -> list[float]:
    """Edits one at a time, as ``BillingClient`` sends them (priority first, then the update)."""
    timings = []
    for index in range(count):
        handle = handles[index % len(handles)]
        units = Decimal(offset + index + 1)
        began = time.perf_counter()
        if operator_priority:
            await give_operator_priority(client, handle.id)
        invoice: Invoice = await handle.execute_update(
            BillingPeriodWorkflow.edit_fee_sync,
            EditFee(charge_code=CHARGE, mode="units", units=units),
        )
        timings.append(time.perf_counter() - began)
        fee = next(f for f in invoice.fees if f.code == CHARGE)
        assert fee.units == units and fee.adjusted, (fee, units)
    return timings


def figures(name: str, timings: list[float], extra: str = "") -> dict[str, Any]:
    result = {
        "edits": len(timings),
        "p50_ms": round(percentile(timings, 0.5) * 1000, 1),
        "p99_ms": round(percentile(timings, 0.99) * 1000, 1),
        "max_ms": round(max(timings) * 1000, 1),
        "load_average_after": load_average(),
    }
    print(
        f"  {name}: {len(timings)} edits, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
        f"max {result['max_ms']} ms{extra}; load {result['load_average_after']}",
        flush=True,
    )
    return result


async def start_close(client: Client, subscriptions: list[str], task_queue: str) -> None:
    async def start(subscription: str) -> None:
        await client.start_workflow(
            BillingPeriodWorkflow.run,
            BillingPeriodInput(
                subscription_external_id=subscription,
                period_start=JANUARY[0],
                period_end=JANUARY[1],
                grace_period_seconds=2,
                refresh_debounce_seconds=0,
                webhook_retry_window_seconds=600,
            ),
            id=period_workflow_id(subscription, JANUARY[0]),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal="add_usage",
            start_signal_args=[AddUsage(events=usage_events(subscription, JANUARY[0], 3))],
        )

    await bounded_gather([start(s) for s in subscriptions], START_CONCURRENCY)


@asynccontextmanager
async def run_worker(
    args: argparse.Namespace,
    client: Client,
    engine: Engine,
    url: str,
    http: httpx.AsyncClient,
    task_queue: str,
) -> AsyncIterator[None]:
    """The worker: in a process of its own (as in production: an operator's client is never
    inside the worker), or with ``--in-process`` in this one, beside the client and sink."""
    if not args.in_process:
        async with spawn_workers(client, url, task_queue, [[]]):
            yield
        return
    tune_garbage_collection()  # as worker.run_worker does
    with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS) as executor:
        worker = build_worker(
            client,
            engine,
            http,
            task_queue=task_queue,
            executor=executor,
            workflow_task_slots=args.workflow_task_slots,
        )
        async with worker:
            yield


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    editable = [f"edit_{i:03d}" for i in range(args.periods)]
    closing = [f"close_{i:06d}" for i in range(args.close)]
    result: dict[str, Any] = {
        "benchmark": "fee_edit",
        "edit_periods": args.periods,
        "close_periods": args.close,
        "worker": (
            "1 worker (worker.build_worker) in this process, beside client and sink"
            if args.in_process
            else "1 worker process (bench/_worker.py); client and sink in the bench process"
        ),
        "operator_priority": args.operator_priority,
        "workflow_task_slots": args.workflow_task_slots,
        **machine(),
    }
    print(
        f"fee edits: {args.edits} per phase over {args.periods} drafts, close of {args.close:,} "
        f"(load {result['load_average_at_start']})",
        flush=True,
    )
    with fresh_schema(args.url, "bench_fee_edit") as url:
        finish = Finish(len(closing))

        def on_delivery(record: ReceivedWebhook) -> None:
            if record.accepted and not record.duplicate:
                payload = json.loads(record.body)
                if payload.get("webhook_type") == "invoice.created":
                    finish.mark(payload["invoice"]["subscription_external_id"], time.monotonic())

        sink = WebhookSink(secret=SECRET, on_delivery=on_delivery)
        await sink.start("127.0.0.1", 0)
        engine = load_bench_catalog(url, editable + closing, sink.url)
        task_queue = "bench-fee-edit"
        try:
            async with (
                dev_server() as client,
                httpx.AsyncClient() as http,
                run_worker(args, client, engine, url, http, task_queue),
            ):
                handles = []
                for sub in editable:
                    started = await start_period(
                        client,
                        BillingPeriodInput(
                            subscription_external_id=sub,
                            period_start=JANUARY[0],
                            period_end=JANUARY[1],
                            grace_period_seconds=3600,
                        ),
                        task_queue=task_queue,
                    )
                    handles.append(client.get_workflow_handle(started.id))
                deadline = time.monotonic() + 60
                for handle in handles:
                    while (
                        await handle.query(BillingPeriodWorkflow.invoice)
                    ).phase != PeriodPhase.DRAFT:
                        assert time.monotonic() < deadline, "drafts not ready in 60s"
                        await asyncio.sleep(0.1)
                await edit_round_trips(
                    client, handles, min(10, args.edits), 10_000, args.operator_priority
                )  # warm-up
                result["idle"] = figures(
                    "idle",
                    await edit_round_trips(client, handles, args.edits, 0, args.operator_priority),
                )

                close_began = time.monotonic()
                closer = asyncio.create_task(start_close(client, closing, task_queue))
                await asyncio.sleep(0.5)  # let the launch get going
                timings = await edit_round_trips(
                    client, handles, args.edits, args.edits, args.operator_priority
                )
                closed_during = len(finish.ended)
                await closer
                await asyncio.wait_for(finish.all_done.wait(), timeout=args.timeout)
                close_seconds = time.monotonic() - close_began
                result["during_close"] = figures(
                    "during close",
                    timings,
                    f" ({closed_during:,} of {args.close:,} periods closed meanwhile; "
                    f"the close took {close_seconds:.1f}s)",
                )
                result["during_close"]["closed_meanwhile"] = closed_during
                result["during_close"]["close_seconds"] = round(close_seconds, 2)
        finally:
            await sink.stop()
            engine.dispose()
    return result


def main() -> None:
    parser = bench_parser(__doc__, "20 edits, close of 20")
    parser.add_argument("--edits", type=int, default=300, help="edits per phase")
    parser.add_argument("--periods", type=int, default=5, help="drafts edited round robin")
    parser.add_argument("--close", type=int, default=1000, help="periods closed meanwhile")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the worker in the bench process, beside the editing client and the sink",
    )
    parser.add_argument(
        "--no-operator-priority",
        dest="operator_priority",
        action="store_false",
        help="send the update alone, without give_operator_priority first",
    )
    parser.add_argument(
        "--workflow-task-slots",
        type=int,
        default=WORKFLOW_TASK_SLOTS,
        help=f"--in-process worker's max concurrent workflow tasks (default {WORKFLOW_TASK_SLOTS})",
    )
    args = parser.parse_args()
    stop_cleanly_on_sigterm()
    if args.smoke:
        args.edits, args.periods, args.close, args.timeout = 20, 2, 20, 60
    result = asyncio.run(bench(args))
    finish(
        "fee_edit",
        result,
        args.output,
        f"p99 {result['idle']['p99_ms']} ms idle, "
        f"{result['during_close']['p99_ms']} ms during a close",
    )


if __name__ == "__main__":
    main()
