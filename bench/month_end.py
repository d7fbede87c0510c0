"""Benchmark: the month-end as an operator runs it, through the ``billing`` CLI (issue 13).

Against an embedded dev server (in-memory, headless, free ports) and a fresh PostgreSQL
schema, everything else is the CLI of one checkout (``--checkout DIR``, default this
repository), each command a process of its own, as an operator types it:

- set-up, not timed: ``billing db upgrade``, ``billing catalog load`` of S subscriptions
  (one billing entity with ``grace_period_days: 0``, a webhook endpoint pointing at a
  receiver in its own process, bench/_sink.py), ``billing worker --processes N`` (ready
  when the task queue has N workflow and N activity pollers);
- timed: ``billing usage send --file month.jsonl`` (the month's usage: 3-10 January events
  for 9 subscriptions in 10, none for the tenth), then ``billing period start-all
  --period-end 2026-01-31``, until the receiver has accepted every ``invoice.created``;
- checked afterwards: ``billing invoice list --json`` has one finalized January invoice per
  subscription with the total computed here from the events, and the receiver got exactly
  one ``invoice.created`` per subscription.

January 2026 is over when this runs, so ``usage send`` starts the periods it routes events
to (update-with-start) and they go on to draft and finalize at once; ``start-all`` then
starts the periods without usage and reports the others already running or finalized
(the one start path, docs/architecture.md section 3).

    .venv/bin/python bench/month_end.py                   # 500 subscriptions
    .venv/bin/python bench/month_end.py --checkout DIR    # DIR: a bootstrapped worktree
    .venv/bin/python bench/month_end.py --smoke           # 20 subscriptions

Prints and writes to ``bench/results/month_end.json``: the wall time of each step and in
total, invoices/s, and the CPU seconds of the CLI processes, the worker processes, the dev
server and PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy
from _month_end_procs import (
    cli,
    history_gaps,
    postgres_cpu_seconds,
    start_workers,
    tree_cpu_seconds,
)
from _stack import (
    SECRET,
    SERVER_PIDS,
    bench_catalog,
    bench_parser,
    cpu_seconds,
    dev_server,
    finish,
    load_average,
    machine,
    percentile,
    stop_cleanly_on_sigterm,
    wait_until,
    write_result,
)
from sqlalchemy import text

REPOSITORY = Path(__file__).resolve().parents[1]
JANUARY = datetime(2026, 1, 1, tzinfo=UTC)
PERIOD_END = "2026-01-31"
TASK_QUEUE = "billing-periods"
PLAN_FEE_CENTS = 1000  # bench_catalog's plan "pro"
API_CALL_CENTS = 1  # standard, 0.01 USD per call
STORAGE_EVENT_GB = Decimal("1.5")
STORAGE_CENTS_PER_GB = 200  # graduated, first tier (0-10 GB): 2 USD per GB


# --------------------------------------------------------------------------- the month


def month_catalog(subscriptions: list[str], webhook_url: str) -> dict[str, Any]:
    """bench_catalog, with no grace period: each invoice is finalized as soon as drafted."""
    catalog = bench_catalog(subscriptions, webhook_url)
    for entity in catalog["billing_entities"]:
        entity["grace_period_days"] = 0
    return catalog


def events_of(index: int) -> int:
    """Usage events of the index-th subscription in January: 3 to 10, none for 1 in 10."""
    return 0 if index % 10 == 9 else 3 + index % 8


def month_usage(subscriptions: list[str]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The month's events, in time order as an export has them, and each invoice's total.

    Every third event of a subscription is ``storage_gb`` (1.5 GB; at most 3 such events,
    so the sum stays in the graduated charge's first tier), the others ``api_calls``.
    """
    events: list[dict[str, Any]] = []
    expected: dict[str, int] = {}
    for index, subscription in enumerate(subscriptions):
        total = Decimal(PLAN_FEE_CENTS)
        for number in range(events_of(index)):
            at = JANUARY + timedelta(days=3 * number, hours=index % 24, minutes=index % 60)
            storage = number % 3 == 2
            events.append(
                {
                    "transaction_id": f"{subscription}-jan-{number}",
                    "external_subscription_id": subscription,
                    "code": "storage_gb" if storage else "api_calls",
                    "timestamp": at.isoformat(),
                    "properties": {"gb": str(STORAGE_EVENT_GB)} if storage else {},
                }
            )
            total += STORAGE_EVENT_GB * STORAGE_CENTS_PER_GB if storage else API_CALL_CENTS
        expected[subscription] = int(total)
    events.sort(key=lambda event: (event["timestamp"], event["transaction_id"]))
    return events, expected


# --------------------------------------------------------------------------- the stack


@contextlib.contextmanager
def empty_schema(server_url: str) -> Iterator[str]:
    """A schema of its own (search_path in the URL), dropped afterwards; the checkout's
    ``billing db upgrade`` creates its tables, so that each checkout gets its own schema."""
    schema = f"bench_month_end_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(server_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in server_url else "?"
    try:
        yield f"{server_url}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


class Receiver:
    """The webhook receiver (bench/_sink.py): when each subscription's ``invoice.created``
    arrived, and how many distinct ones (a second one would be a second invoice)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.first: dict[str, float] = {}
        self.received: Counter[str] = Counter()
        self.all_done = asyncio.Event()

    async def read(self, stdout: asyncio.StreamReader) -> None:
        while line := await stdout.readline():
            subscription, at = line.decode().split()
            self.received[subscription] += 1
            self.first.setdefault(subscription, float(at))
            if len(self.first) >= self.expected:
                self.all_done.set()


@contextlib.asynccontextmanager
async def receiver(expected: int) -> AsyncIterator[tuple[Receiver, int]]:
    sink = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("_sink.py")),
        SECRET,
        stdout=asyncio.subprocess.PIPE,
    )
    assert sink.stdout is not None
    port = int((await sink.stdout.readline()).split()[1])
    state = Receiver(expected)
    reader = asyncio.create_task(state.read(sink.stdout))
    try:
        yield state, port
    finally:
        sink.terminate()
        await sink.wait()
        reader.cancel()


class Meter:
    """CPU seconds of the worker processes (with their children), the dev server and
    PostgreSQL from now on; the CLI processes are measured one by one (cli())."""

    def __init__(self, worker_pid: int) -> None:
        self._worker_pid = worker_pid
        self._start = self._read()

    def _read(self) -> dict[str, float]:
        return {
            "worker_processes": tree_cpu_seconds(self._worker_pid),
            "dev_server": sum(cpu_seconds(pid) for pid in SERVER_PIDS),
            "postgres": postgres_cpu_seconds(),
        }

    def used(self) -> dict[str, float]:
        now = self._read()
        return {name: round(now[name] - self._start[name], 1) for name in now}


async def wait_webhooks(state: Receiver, timeout: float) -> None:
    await wait_until(
        state.all_done, timeout, lambda: f"{len(state.first):,}/{state.expected:,} webhooks"
    )


# --------------------------------------------------------------------------- the run


def check(
    invoices: list[dict[str, Any]], expected: dict[str, int], state: Receiver
) -> dict[str, Any]:
    """What an operator checks after the month-end: one finalized invoice per subscription,
    its total, one webhook each."""
    january = [i for i in invoices if str(i["period_start"]).startswith("2026-01-01")]
    per_subscription = Counter(i["subscription_external_id"] for i in january)
    finalized = {
        i["subscription_external_id"]: int(i["total_amount_cents"])
        for i in january
        if i["status"] == "finalized"
    }
    wrong_totals = sorted(s for s, cents in expected.items() if finalized.get(s) != cents)
    return {
        "invoices": len(january),
        "invoices_by_status": dict(Counter(i["status"] for i in january)),
        "subscriptions_with_one_finalized_invoice": sum(
            1 for s in expected if per_subscription[s] == 1 and s in finalized
        ),
        "wrong_totals": len(wrong_totals),
        "wrong_totals_examples": [
            {"subscription": s, "expected": expected[s], "invoiced": finalized.get(s)}
            for s in wrong_totals[:5]
        ],
        "total_amount_cents": sum(finalized.values()),
        "expected_total_amount_cents": sum(expected.values()),
        "webhooks_received": sum(state.received.values()),
        "subscriptions_with_one_webhook": sum(1 for s in expected if state.received[s] == 1),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    checkout = args.checkout.resolve()
    billing = checkout / ".venv" / "bin" / "billing"
    if not billing.is_file():
        raise SystemExit(f"{billing}: no such file (bootstrap the checkout first)")
    revision = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    subscriptions = [f"sub_{index:06d}" for index in range(args.subscriptions)]
    events, expected = month_usage(subscriptions)
    result: dict[str, Any] = {
        "benchmark": "month_end",
        # Not the path: results are kept in the repository, which names no outside path.
        "checkout": "this repository" if checkout == REPOSITORY else "another (--checkout)",
        "revision": revision,
        "subscriptions": len(subscriptions),
        "usage_events": len(events),
        "subscriptions_without_usage": sum(
            1 for i in range(len(subscriptions)) if not events_of(i)
        ),
        "worker_processes": args.worker_processes,
        "grace_period_days": 0,
        **machine(),
    }
    print(
        f"month-end of {len(subscriptions):,} subscriptions ({len(events):,} events) through "
        f"the CLI of {checkout} ({revision}), {args.worker_processes} worker process(es) "
        f"(load {result['load_average_at_start']})",
        flush=True,
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench_month_end_") as scratch,
        empty_schema(args.url) as url,
    ):
        work = Path(scratch)
        month = work / "month.jsonl"
        month.write_text("".join(json.dumps(event) + "\n" for event in events))
        env = {
            **os.environ,
            "BILLING_DATABASE_URL": url,
            "BILLING_DATA_DIR": str(work / "data"),
            "BILLING_TASK_QUEUE": TASK_QUEUE,
        }
        env.pop("BILLING_WEBHOOK_SECRET", None)  # the catalog gives the receiver's secret
        async with receiver(len(subscriptions)) as (state, sink_port), dev_server() as client:
            env["TEMPORAL_ADDRESS"] = client.service_client.config.target_host
            await cli(billing, ["db", "upgrade"], env, work)
            catalog = work / "catalog.yaml"  # JSON is YAML
            catalog.write_text(
                json.dumps(month_catalog(subscriptions, f"http://127.0.0.1:{sink_port}/"))
            )
            await cli(billing, ["catalog", "load", str(catalog)], env, work)
            async with start_workers(billing, args.worker_processes, env, work, client) as pid:
                print("  workers polling; timing starts", flush=True)
                meter = Meter(pid)
                began = time.monotonic()
                sent = await cli(
                    billing,
                    ["usage", "send", "--file", str(month), "--json"],
                    env,
                    work,
                    check=False,
                )
                sent_at = time.monotonic()
                print(f"  usage send: {sent_at - began:.1f}s", flush=True)
                launched = await cli(
                    billing,
                    ["period", "start-all", "--period-end", PERIOD_END, "--json"],
                    env,
                    work,
                    check=False,
                )
                launched_at = time.monotonic()
                print(f"  period start-all: {launched_at - sent_at:.1f}s", flush=True)
                await wait_webhooks(state, args.timeout)
                ended = max(state.first.values()) if state.all_done.is_set() else time.monotonic()
                cpu = meter.used()
            # The dev server forgets everything on exit: read the slowest periods now.
            slowest = sorted(state.first, key=state.first.__getitem__)[-3:]
            histories = [
                await history_gaps(client, f"billing-period/{s}/2026-01-01") for s in slowest
            ]
            listed = await cli(billing, ["invoice", "list", "--json"], env, work)
            deliveries = await cli(billing, ["webhook", "list", "--json"], env, work)
            worker_log = (work / "worker.log").read_text(errors="replace")
    report = json.loads(sent.stdout)
    outcomes = Counter(o["status"] for o in json.loads(launched.stdout)["outcomes"])
    seconds = ended - began
    cpu["cli_processes"] = round(sent.cpu_seconds + launched.cpu_seconds, 1)
    result["month_end"] = {
        "completed": len(state.first),
        "seconds": round(seconds, 2),
        "usage_send_seconds": round(sent_at - began, 2),
        "start_all_seconds": round(launched_at - sent_at, 2),
        "until_last_webhook_seconds": round(ended - launched_at, 2),
        "invoices_per_second": round(len(state.first) / seconds, 2),
        "cpu_seconds": cpu,
        "cpu_seconds_per_invoice": round(sum(cpu.values()) / max(1, len(state.first)), 3),
        "usage_send": {
            "exit_code": sent.exit_code,
            "accepted": report["accepted"],
            "duplicates": report["duplicates"],
            "rejected": len(report["rejected"]),
            "cpu_seconds": round(sent.cpu_seconds, 1),
        },
        "start_all": {
            "exit_code": launched.exit_code,
            "outcomes": dict(outcomes),
            "cpu_seconds": round(launched.cpu_seconds, 1),
        },
        "load_average_after": load_average(),
    }
    result["check"] = check(json.loads(listed.stdout), expected, state)
    result["diagnostics"] = diagnose(state, began, json.loads(deliveries.stdout), worker_log)
    result["diagnostics"]["slowest_periods"] = histories
    return result


def diagnose(
    state: Receiver, began: float, deliveries: list[dict[str, Any]], worker_log: str
) -> dict[str, Any]:
    """Where a slow tail comes from: when the webhooks arrived, which deliveries needed more
    than one attempt, and what the workers logged above INFO."""
    arrivals = sorted((at - began, subscription) for subscription, at in state.first.items())
    retried = [d for d in deliveries if d["attempts"] > 1]
    complaints = [
        line
        for line in worker_log.splitlines()
        if any(word in line for word in ("WARNING", "ERROR", "Traceback", "Exception"))
    ]
    return {
        "webhook_arrival_seconds": {
            label: round(percentile([a for a, _ in arrivals], fraction), 2)
            for label, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
        },
        "last_webhooks": [{"subscription": s, "seconds": round(a, 2)} for a, s in arrivals[-3:]],
        "deliveries_by_status": dict(Counter(d["status"] for d in deliveries)),
        "deliveries_with_retries": [
            {
                "invoice_id": d["invoice_id"],
                "attempts": d["attempts"],
                "last_http_status": d["last_http_status"],
                "last_error": d["last_error"],
            }
            for d in retried[:5]
        ],
        "deliveries_with_retries_count": len(retried),
        "worker_log_warnings": len(complaints),
        "worker_log_warning_examples": sorted(set(line[:300] for line in complaints))[:5],
    }


def failures(result: dict[str, Any]) -> list[str]:
    """What makes the run wrong (not slow): the checks of the month-end."""
    run, checked, count = result["month_end"], result["check"], result["subscriptions"]
    problems = []
    if run["usage_send"]["accepted"] != result["usage_events"] or run["usage_send"]["rejected"]:
        problems.append(f"usage send: {run['usage_send']}")
    if run["start_all"]["exit_code"] != 0:
        problems.append(f"start-all: {run['start_all']}")
    if checked["subscriptions_with_one_finalized_invoice"] != count:
        problems.append(f"finalized invoices: {checked['invoices_by_status']}")
    if checked["wrong_totals"]:
        problems.append(f"wrong totals: {checked['wrong_totals_examples']}")
    if checked["subscriptions_with_one_webhook"] != count:
        problems.append(f"webhooks: {checked['webhooks_received']} for {count} subscriptions")
    return problems


def main() -> None:
    parser = bench_parser(__doc__, "20 subscriptions, 1 worker process")
    parser.add_argument("--subscriptions", type=int, default=500)
    parser.add_argument(
        "--worker-processes", type=int, default=2, help="billing worker --processes N"
    )
    parser.add_argument(
        "--checkout",
        type=Path,
        default=REPOSITORY,
        help="run DIR/.venv/bin/billing (DIR's CLI, worker and catalog format)",
    )
    parser.add_argument("--timeout", type=float, default=1200, help="seconds for the webhooks")
    args = parser.parse_args()
    stop_cleanly_on_sigterm()
    if args.smoke:
        args.subscriptions, args.worker_processes, args.timeout = 20, 1, 60
    result = asyncio.run(bench(args))
    problems = failures(result)
    result["ok"] = not problems
    run = result["month_end"]
    summary = (
        f"{run['completed']:,} invoices in {run['seconds']}s = {run['invoices_per_second']}/s "
        f"(usage send {run['usage_send_seconds']}s, start-all {run['start_all_seconds']}s, "
        f"last webhook +{run['until_last_webhook_seconds']}s); CPU s {run['cpu_seconds']}; "
        + ("checks passed" if not problems else "CHECKS FAILED: " + "; ".join(problems))
    )
    if problems:
        print(summary, file=sys.stderr)
        write_result("month_end", result, args.output)
        sys.stdout.flush()
        os._exit(1)
    finish("month_end", result, args.output, summary)


if __name__ == "__main__":
    main()
