"""Benchmark: month-end close of N billing periods, against its references.

Against an embedded dev server (in-memory, headless, free ports) and a fresh PostgreSQL
schema, with one in-process worker (``worker.build_worker``) or ``--worker-processes N``:

1. **floor**: N do-nothing ``FloorPeriod`` workflows (bench/_floor.py) with the history
   shape of a billing period: signal-with-start carrying the usage, search attributes at
   start, a patch marker, the local activities ``record_usage`` and ``draft_invoice``, the
   grace timer, the local activity ``finalize_invoice``, the activity ``deliver_webhook``
   and two search-attribute upserts; ``--regular-floor`` adds it with its store steps as
   regular activities (the floor of the lean shape before patch ``local-store-steps``);
2. **close**: N ``BillingPeriodWorkflow`` s (January, already over) started at once, each
   with a few usage events (signal-with-start), through draft, a short grace period,
   finalization and the ``invoice.created`` webhook received by the receiver (a process of
   its own, bench/_sink.py);
3. **plain SQL**: the close's store steps without Temporal (March periods), on as many
   threads as the worker has activity slots (bench/_references.py).

Ratios: close/floor, close/plain SQL and close/(floor + plain SQL), where **floor + plain
SQL** is what a close with no overhead of its own would cost: the floor's seconds plus the
plain-SQL seconds for the same periods (and the sum of both phases' CPU for the CPU ratio);
bench/_references.py defines each.

**Fault mode** (``--kill-worker-after N``, with ``--worker-processes``): the last worker
process is SIGKILLed once N webhooks have arrived and started again ``--restart-pause``
seconds later. At the end the run checks from the database and the receiver that every
invoice was finalized exactly once with gapless numbers and that its webhook arrived, one
webhook id per invoice, one copy after the receiver's dedupe (redeliveries of the same id
are counted: bench/_fault.py). It writes the figures and any problem into ``fault`` and
exits 1 when a check failed. A close without a kill is checked the same way
(``exactly_once`` in the result).

    .venv/bin/python bench/close.py                  # 10,000 periods
    .venv/bin/python bench/close.py --periods 1000
    .venv/bin/python bench/close.py --periods 1000 --worker-processes 2 --kill-worker-after 300 \
        --skip-plain-sql --skip-floor
    .venv/bin/python bench/close.py --smoke          # 20 periods, a few seconds

Prints invoices/s, p50/p99 period latency (start sent -> webhook received) and the ratios,
and writes them to ``bench/results/close.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy
from _fault import after_the_kill, check_fault, exactly_once, kill_and_restart, read_ledger
from _floor import FLOOR_ACTIVITIES, FloorPeriod, make_done_activity
from _references import ratios, run_plain_sql
from _stack import (
    SECRET,
    CpuMeter,
    Finish,
    bench_parser,
    bounded_gather,
    dev_server,
    finish,
    free_port,
    fresh_schema,
    load_bench_catalog,
    machine,
    stop_cleanly_on_sigterm,
    summarise,
    wait_all,
    worker_pool,
)
from sqlalchemy import text
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import Worker

from billing.models import UsageEvent
from config.settings import WORKFLOW_TASK_SLOTS
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


async def read_sink(
    stdout: asyncio.StreamReader, finish: Finish, received: list[dict[str, Any]]
) -> None:
    """Keeps every request the receiver process reports (bench/_sink.py) and marks each
    period whose ``invoice.created`` webhook it accepted (the first copy)."""
    while line := await stdout.readline():
        request = json.loads(line)
        received.append(request)
        first_copy = request["accepted"] and not request["duplicate"]
        if request["type"] == "invoice.created" and first_copy:
            finish.mark(request["subscription"], request["at"])


async def run_floor(
    client: Client,
    subscriptions: list[str],
    events: int,
    grace: int,
    executor: ThreadPoolExecutor,
    timeout: float,
    *,
    regular_store_steps: bool = False,
) -> dict[str, Any]:
    finish = Finish(len(subscriptions))
    share_workflow_code([FloorPeriod])  # as build_worker does for ours
    shape = "regular" if regular_store_steps else "local"
    task_queue = f"bench-floor-{shape}"
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[FloorPeriod],
        activities=[*FLOOR_ACTIVITIES, make_done_activity(finish.mark_threadsafe)],
        activity_executor=executor,
        # Tuned as build_worker tunes the billing worker.
        max_concurrent_activities=ACTIVITY_THREADS - WORKFLOW_TASK_SLOTS,
        max_concurrent_local_activities=WORKFLOW_TASK_SLOTS,
        max_concurrent_workflow_tasks=WORKFLOW_TASK_SLOTS,
    )
    started: dict[str, float] = {}

    async def start(subscription: str) -> None:
        workflow_id = f"floor-{shape}/{subscription}"
        usage = AddUsage(events=usage_events(subscription, JANUARY[0], events))
        started[workflow_id] = time.monotonic()
        await client.start_workflow(
            "FloorPeriod",
            {"grace_seconds": grace, "regular_store_steps": regular_store_steps},
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
        name = "floor (regular store steps)" if regular_store_steps else "floor"
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
    kill_worker_after: int | None = None,
    restart_pause: float = 1.0,
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
            pool = await stack.enter_async_context(
                worker_pool(
                    client,
                    url,
                    task_queue,
                    # Free ports: two benchmarks (or a test beside one) may run at once.
                    [["--metrics-port", str(free_port())] for _ in range(worker_processes)],
                )
            )
            cpu = CpuMeter(worker_cpu=pool.cpu_seconds)
        else:
            http = await stack.enter_async_context(
                httpx.AsyncClient(limits=httpx.Limits(max_connections=32))
            )
            worker = build_worker(client, engine, http, task_queue=task_queue, executor=executor)
            await stack.enter_async_context(worker)
            cpu = CpuMeter()
        began = time.monotonic()
        killer, kill = None, dict[str, Any]()
        if kill_worker_after is not None:
            killer = asyncio.create_task(
                kill_and_restart(
                    pool,
                    worker_processes - 1,
                    lambda: len(sink_finish.ended),
                    kill_worker_after,
                    restart_pause,
                    kill,
                )
            )
        await bounded_gather([start(s) for s in subscriptions], START_CONCURRENCY)
        launched = time.monotonic()
        await wait_all(sink_finish, timeout, lambda: f"{len(sink_finish.ended):,} webhooks")
        result = summarise("close", started, sink_finish, began, launched, cpu)
        if killer is not None:
            ids = [period_workflow_id(s, JANUARY[0]) for s in subscriptions]
            result["fault"] = await after_the_kill(client, killer, kill, ids, timeout)
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT status, count(*) FROM invoices WHERE period_start = :start GROUP BY status"
            ),
            {"start": JANUARY[0]},
        ).all()
    result["invoices_by_status"] = {status: count for status, count in rows}
    result["worker_processes"] = worker_processes or "in the bench process"
    result["worker_activity_threads"] = ACTIVITY_THREADS
    result["worker_workflow_task_slots"] = WORKFLOW_TASK_SLOTS  # = its local activities
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
            "--every-request",
            stdout=asyncio.subprocess.PIPE,
        )
        assert sink.stdout is not None
        sink_port = int((await sink.stdout.readline()).split()[1])
        received: list[dict[str, Any]] = []
        reader = asyncio.create_task(read_sink(sink.stdout, loop_finish, received))
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
                    if args.regular_floor:
                        result["floor_regular_store_steps"] = await run_floor(
                            client,
                            subscriptions,
                            args.events,
                            args.grace,
                            executor,
                            args.timeout,
                            regular_store_steps=True,
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
                        kill_worker_after=args.kill_worker_after,
                        restart_pause=args.restart_pause,
                    )
            if "fault" in result["close"]:
                # Read before the plain-SQL phase numbers invoices of its own.
                result["fault"] = check_fault(
                    result["close"].pop("fault"),
                    subscriptions,
                    read_ledger(engine, JANUARY[0]),
                    received,
                )
            else:
                # Every close is checked the same way, a killed worker or not.
                checked, problems = exactly_once(
                    subscriptions, read_ledger(engine, JANUARY[0]), received
                )
                result["exactly_once"] = checked | {"problems": problems}
                print(
                    f"  exactly once: invoices {checked['invoices_by_status']}, "
                    f"{checked['receiver_distinct_webhook_ids']:,} webhook ids received "
                    f"({checked['redeliveries']} redeliveries); "
                    f"{'FAILED: ' + '; '.join(problems) if problems else 'passed'}",
                    flush=True,
                )
            if not args.skip_plain_sql:
                result["plain_sql"] = await asyncio.to_thread(
                    run_plain_sql,
                    engine,
                    subscriptions,
                    lambda subscription: usage_events(subscription, MARCH[0], args.events),
                    MARCH,
                    ACTIVITY_THREADS,
                )
        finally:
            sink.terminate()
            await sink.wait()
            reader.cancel()
            engine.dispose()
    result.update(ratios(result))
    if args.periods < 10_000:
        result["extrapolated_10000_seconds"] = round(
            10_000 / result["close"]["invoices_per_second"], 1
        )
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
        "--kill-worker-after",
        type=int,
        default=None,
        metavar="N",
        help="fault mode: SIGKILL the last worker process once N webhooks arrived, restart it, "
        "then check every invoice finalized and delivered exactly once (exit 1 if not)",
    )
    parser.add_argument(
        "--restart-pause",
        type=float,
        default=1.0,
        help="seconds between the kill and the restart (fault mode)",
    )
    parser.add_argument(
        "--regular-floor",
        action="store_true",
        help="also run the floor with its store steps as regular activities (the lean "
        "shape before patch local-store-steps)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.periods, args.grace, args.timeout = 20, 1, 60
    if args.kill_worker_after is not None and not args.worker_processes:
        parser.error("--kill-worker-after needs --worker-processes N (N >= 1)")
    if args.kill_worker_after is not None and not 0 < args.kill_worker_after < args.periods:
        parser.error("--kill-worker-after must be between 1 and --periods - 1")
    stop_cleanly_on_sigterm()
    result = asyncio.run(bench(args))
    summary = f"{result['close']['invoices_per_second']} invoices/s"
    if "ratio_to_floor" in result:
        summary += f", {result['ratio_to_floor']}x the orchestration floor"
    if "ratio_to_plain_sql" in result:
        summary += f", {result['ratio_to_plain_sql']}x plain SQL"
    if "ratio_to_floor_plus_plain_sql" in result:
        summary += (
            f", {result['ratio_to_floor_plus_plain_sql']}x floor + plain SQL "
            f"(CPU {result['cpu_ratio_to_floor_plus_plain_sql']}x)"
        )
    problems = result.get("fault", result.get("exactly_once", {})).get("problems", [])
    if "exactly_once" in result:
        summary += f"; exactly once: {'FAILED' if problems else 'yes'}"
    if "fault" in result:
        summary += (
            f"; worker killed, exactly once: {'FAILED' if problems else 'yes'} "
            f"({result['fault']['redeliveries']} redeliveries)"
        )
    if "extrapolated_10000_seconds" in result:
        summary += (
            f"; EXTRAPOLATED (linear, not measured): 10,000 periods in "
            f"~{result['extrapolated_10000_seconds']}s"
        )
    finish("close", result, args.output, summary, exit_code=1 if problems else 0)


if __name__ == "__main__":
    main()
