"""Benchmark: re-timing N running drafts after their grace period setting changed.

Every draft is drafted with the billing entity's grace period of 1 day; the entity is then
loaded with 2 days (a lengthening, so that no deadline falls in the past and nothing
finalizes: what is timed is the re-timing alone). Two phases, each on a fresh PostgreSQL
schema:

1. **store** (no Temporal): N drafts inserted with ``services.invoices.create_draft`` (the
   draft step), then timed: ``drafts_to_follow_settings`` (the one query that finds them),
   ``recompute_grace_period`` for each on as many threads as a worker has activity slots
   (what the workers' activities do), and the query again (finds none).
2. **signals** (end to end): N real billing periods (January, already over) started and
   waited for until every one is drafted and waits in its grace timer; then the catalog
   load, and timed from there: ``starter.grace_periods.follow_settings`` (find + one
   ``recompute_grace_period`` signal per draft, ``--concurrency`` in flight), then the
   store watched until every draft's ``expected_finalization_at`` moved (a count of the
   ``grace_period_changed`` timeline entries, one per draft moved; at the end
   ``drafts_to_follow_settings`` must find none). Per draft, the time from the first signal to its
   ``grace_period_changed`` timeline entry: p50, p99, max.

Workers: ``--worker-processes N`` (``bench/_worker.py`` = ``worker.build_worker``, as
``billing worker --processes N`` runs them; default 2), or 0 for one worker in the bench
process. ``--skip-store`` / ``--skip-signals`` run one phase; ``--store-drafts`` sizes the
store phase apart (default: ``--drafts``).

    .venv/bin/python bench/retime.py --drafts 1000
    .venv/bin/python bench/retime.py --drafts 10000 --timeout 3600
    .venv/bin/python bench/retime.py --smoke         # 20 drafts, a few seconds

Writes ``bench/results/retime.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import sqlalchemy
from _stack import (
    CpuMeter,
    bench_catalog,
    bench_parser,
    bounded_gather,
    dev_server,
    finish,
    free_port,
    fresh_schema,
    load_average,
    load_bench_catalog,
    machine,
    percentile,
    stop_cleanly_on_sigterm,
    worker_pool,
)
from sqlalchemy import text

from services.catalog import load_catalog
from services.grace_periods import drafts_to_follow_settings, recompute_grace_period
from services.invoices import create_draft
from starter.grace_periods import follow_settings
from starter.periods import start_period
from worker import ACTIVITY_THREADS, build_worker, tune_garbage_collection
from workflows.messages import BillingPeriodInput

JANUARY = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
START_CONCURRENCY = 100
TASK_QUEUE = "bench-retime"
ACTOR = "bench-retime"


def lengthen(engine: sqlalchemy.Engine, days: int) -> float:
    """Load the billing entity with ``days`` of grace (what an operator's catalog load
    changes); returns the seconds it took."""
    entity = bench_catalog([], "http://127.0.0.1:1/")["billing_entities"][0]
    began = time.monotonic()
    load_catalog(engine, {"billing_entities": [{**entity, "grace_period_days": days}]})
    return round(time.monotonic() - began, 3)


def count_drafted(engine: sqlalchemy.Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.scalar(
                text(
                    "SELECT count(*) FROM invoices WHERE status = 'draft' "
                    "AND drafted_at IS NOT NULL AND expected_finalization_at IS NOT NULL"
                )
            )
            or 0
        )


def count_changes(engine: sqlalchemy.Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.scalar(
                text("SELECT count(*) FROM invoice_timeline WHERE kind = 'grace_period_changed'")
            )
            or 0
        )


def changes_at(engine: sqlalchemy.Engine) -> list[datetime]:
    """When each ``grace_period_changed`` entry was recorded (one per draft moved)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT at FROM invoice_timeline WHERE kind = 'grace_period_changed'")
        ).all()
    return [row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC) for row in rows]


def rate(count: int, seconds: float) -> float | None:
    return round(count / seconds, 1) if seconds > 0 else None


# --------------------------------------------------------------------------- store


def run_store(server_url: str, drafts: int) -> dict[str, Any]:
    subscriptions = [f"sub_{index:06d}" for index in range(drafts)]
    with fresh_schema(server_url, "bench_retime_store") as url:
        engine = load_bench_catalog(url, subscriptions, "http://127.0.0.1:1/")
        try:
            drafted_at = datetime.now(UTC) - timedelta(hours=1)
            t0 = time.monotonic()
            with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS) as pool:
                list(
                    pool.map(
                        lambda sub: create_draft(engine, sub, *JANUARY, drafted_at=drafted_at),
                        subscriptions,
                    )
                )
            inserted = time.monotonic() - t0
            print(f"  store: {drafts:,} drafts inserted in {inserted:.1f}s", flush=True)
            load_seconds = lengthen(engine, 2)
            cpu = CpuMeter()
            t0 = time.monotonic()
            found = drafts_to_follow_settings(engine)
            find_seconds = time.monotonic() - t0
            t0 = time.monotonic()
            with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS) as pool:
                moved = list(
                    pool.map(
                        lambda d: recompute_grace_period(engine, d.invoice_id, actor=ACTOR),
                        found,
                    )
                )
            recompute_seconds = time.monotonic() - t0
            t0 = time.monotonic()
            left = drafts_to_follow_settings(engine)
            again_seconds = time.monotonic() - t0
            used = cpu.used()
        finally:
            engine.dispose()
    right = sum(1 for m in moved if m.expected_finalization_at == drafted_at + timedelta(days=2))
    result = {
        "drafts": drafts,
        "insert_seconds": round(inserted, 2),
        "catalog_load_seconds": load_seconds,
        "found": len(found),
        "find_seconds": round(find_seconds, 3),
        "recompute_threads": ACTIVITY_THREADS,
        "recompute_seconds": round(recompute_seconds, 2),
        "recompute_per_second": rate(len(found), recompute_seconds),
        "moved_to_the_new_deadline": right,
        "found_again": len(left),
        "find_again_seconds": round(again_seconds, 3),
        "total_seconds": round(find_seconds + recompute_seconds, 2),
        "cpu_seconds": used,
        "load_average_after": load_average(),
    }
    print(
        f"  store: found {len(found):,} in {result['find_seconds']}s, recomputed in "
        f"{result['recompute_seconds']}s ({result['recompute_per_second']}/s on "
        f"{ACTIVITY_THREADS} threads), {right:,} at the new deadline, found again "
        f"{len(left)} in {result['find_again_seconds']}s",
        flush=True,
    )
    return result


# --------------------------------------------------------------------------- signals


async def run_signals(args: argparse.Namespace) -> dict[str, Any]:
    drafts = args.drafts
    subscriptions = [f"sub_{index:06d}" for index in range(drafts)]
    with fresh_schema(args.url, "bench_retime") as url:
        engine = load_bench_catalog(url, subscriptions, "http://127.0.0.1:1/")
        try:
            return await _signals(args, url, engine, subscriptions)
        finally:
            engine.dispose()


async def _signals(
    args: argparse.Namespace, url: str, engine: sqlalchemy.Engine, subscriptions: list[str]
) -> dict[str, Any]:
    drafts = len(subscriptions)
    tune_garbage_collection()
    async with dev_server() as client, contextlib.AsyncExitStack() as stack:
        if args.worker_processes:
            pool = await stack.enter_async_context(
                worker_pool(
                    client,
                    url,
                    TASK_QUEUE,
                    [["--metrics-port", str(free_port())] for _ in range(args.worker_processes)],
                )
            )
            meter: Callable[[], CpuMeter] = partial(CpuMeter, worker_cpu=pool.cpu_seconds)
        else:
            executor = stack.enter_context(ThreadPoolExecutor(max_workers=ACTIVITY_THREADS))
            http = await stack.enter_async_context(httpx.AsyncClient())
            worker = build_worker(client, engine, http, task_queue=TASK_QUEUE, executor=executor)
            await stack.enter_async_context(worker)
            meter = CpuMeter

        async def start(subscription: str) -> None:
            await start_period(
                client,
                BillingPeriodInput(
                    subscription_external_id=subscription,
                    period_start=JANUARY[0],
                    period_end=JANUARY[1],
                ),
                task_queue=TASK_QUEUE,
            )

        t0 = time.monotonic()
        await bounded_gather([start(s) for s in subscriptions], START_CONCURRENCY)
        while (drafted := await asyncio.to_thread(count_drafted, engine)) < drafts:
            if time.monotonic() - t0 > args.timeout:
                raise RuntimeError(f"only {drafted:,} of {drafts:,} periods drafted")
            await asyncio.sleep(1)
        setup = time.monotonic() - t0
        print(f"  signals: {drafts:,} periods started and drafted in {setup:.1f}s", flush=True)
        await asyncio.sleep(2)  # let the last drafts' workflow tasks (the timer) settle

        load_seconds = await asyncio.to_thread(lengthen, engine, 2)
        cpu = meter()
        wall = datetime.now(UTC)
        t0 = time.monotonic()
        report = await follow_settings(
            client, engine, requested_by=ACTOR, concurrency=args.concurrency
        )
        nudged = time.monotonic() - t0
        print(
            f"  signals: {report.summary()} in {nudged:.2f}s (find + signals, "
            f"{args.concurrency} in flight)",
            flush=True,
        )
        # Watched with a count of the timeline's grace_period_changed entries (one per
        # draft moved): cheap, so the watching takes no CPU from the workers.
        moved, last_print = 0, time.monotonic()
        while moved < drafts and time.monotonic() - t0 <= args.timeout:
            await asyncio.sleep(0.5)
            moved = await asyncio.to_thread(count_changes, engine)
            if time.monotonic() - last_print > 15:
                print(f"  ... {moved:,} moved", flush=True)
                last_print = time.monotonic()
        all_moved = time.monotonic() - t0
        used = cpu.used()
    remaining = len(drafts_to_follow_settings(engine))  # the store agrees: none left
    latencies = [(at - wall).total_seconds() for at in changes_at(engine)]
    result = {
        "drafts": drafts,
        "setup_seconds": round(setup, 1),
        "catalog_load_seconds": load_seconds,
        "concurrency": args.concurrency,
        "nudged": report.nudged,
        "missing": len(report.missing),
        "failed": len(report.failed),
        "nudge_seconds": round(nudged, 2),
        "signals_per_second": rate(report.nudged, nudged),
        "all_moved_seconds": round(all_moved, 2),
        "moved": moved,
        "not_moved": remaining,
        "drafts_moved_per_second": rate(moved, all_moved),
        "moved_p50_seconds": round(percentile(latencies, 0.5), 2),
        "moved_p99_seconds": round(percentile(latencies, 0.99), 2),
        "moved_max_seconds": round(max(latencies), 2) if latencies else None,
        "grace_period_changed_entries": len(latencies),
        "worker_processes": args.worker_processes or "in the bench process",
        "cpu_seconds": used,
        "load_average_after": load_average(),
    }
    print(
        f"  signals: every deadline moved in {result['all_moved_seconds']}s "
        f"({result['drafts_moved_per_second']}/s; per draft p50 "
        f"{result['moved_p50_seconds']}s, p99 {result['moved_p99_seconds']}s); "
        f"{remaining} not moved; CPU s {used}",
        flush=True,
    )
    return result


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "benchmark": "retime",
        "drafts": args.drafts,
        "change": "billing entity grace_period_days 1 -> 2 (every deadline moves 1 day later)",
        **machine(),
    }
    print(f"re-timing {args.drafts:,} running drafts (load {result['load_average_at_start']})")
    if not args.skip_store:
        result["store"] = await asyncio.to_thread(run_store, args.url, args.store_drafts)
    if not args.skip_signals:
        result["signals"] = await run_signals(args)
    return result


def main() -> None:
    parser = bench_parser(__doc__, "20 drafts")
    parser.add_argument("--drafts", type=int, default=10_000)
    parser.add_argument("--store-drafts", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=64, help="signals in flight")
    parser.add_argument("--worker-processes", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per wait")
    parser.add_argument("--skip-store", action="store_true")
    parser.add_argument("--skip-signals", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.drafts, args.worker_processes, args.timeout = 20, 0, 90
    args.store_drafts = args.store_drafts or args.drafts
    stop_cleanly_on_sigterm()
    result = asyncio.run(bench(args))
    parts = []
    if "store" in result:
        store = result["store"]
        parts.append(
            f"store: {store['found']:,} found in {store['find_seconds']}s, recomputed in "
            f"{store['recompute_seconds']}s"
        )
    if "signals" in result:
        signals = result["signals"]
        parts.append(
            f"signals: {signals['nudged']:,} nudged in {signals['nudge_seconds']}s, every "
            f"deadline moved in {signals['all_moved_seconds']}s"
        )
    failed = result.get("signals", {}).get("not_moved", 0) or result.get("store", {}).get(
        "found_again", 0
    )
    finish("retime", result, args.output, "; ".join(parts), exit_code=1 if failed else 0)


if __name__ == "__main__":
    main()
