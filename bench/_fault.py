"""The fault mode of bench/close.py: kill a worker process mid-close, then check exactly once.

``kill_and_restart`` SIGKILLs one worker process once N periods have had their
``invoice.created`` webhook accepted and starts it again a moment later. Afterwards
``exactly_once`` checks, from the database and from what the receiver saw:

- every period has one invoice, finalized (nothing left draft, nothing closed);
- invoice numbers are gapless per billing entity: 1..n, no gap, no duplicate, and the
  entity's sequence stands at n;
- every invoice has one ``invoice.created`` delivery, ``succeeded``;
- the receiver got that delivery's webhook id, and no other one, for every invoice; after
  its deduplication by webhook id exactly one copy per invoice is left, signature verified.

A webhook id the receiver saw more than once is a **redelivery**, not a fault: a worker
killed between the HTTP POST and the activity's completion makes Temporal run the delivery
again, with the same id. They are counted, not refused. ``retried_work`` reads the
periods' histories for the work the kill interrupted (activity attempts after the first,
workflow tasks timed out on the killed worker's sticky queue).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy
from _stack import WorkerPool, bounded_gather
from sqlalchemy import text
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

INVOICE_CREATED = "invoice.created"
HISTORY_CONCURRENCY = 20
OUTCOME_CONCURRENCY = 100


async def kill_and_restart(
    pool: WorkerPool,
    slot: int,
    delivered: Callable[[], int],
    after: int,
    pause: float,
    record: dict[str, Any],
) -> None:
    """SIGKILL the slot's worker once ``delivered() >= after``; start it ``pause`` s later.

    Fills ``record`` as it goes: ``webhooks_at_kill`` once the process is killed.
    """
    record |= {"slot": slot, "webhooks_at_kill": None}
    while delivered() < after:
        await asyncio.sleep(0.02)
    process = pool.processes[slot]
    assert process is not None
    record |= {"killed_pid": process.pid, "webhooks_at_kill": delivered()}
    killed_at = time.monotonic()
    await pool.kill(slot)
    print(
        f"  SIGKILL worker process {slot} (pid {record['killed_pid']}) after "
        f"{record['webhooks_at_kill']} webhooks",
        flush=True,
    )
    await asyncio.sleep(pause)
    ready = await pool.start(slot)
    restarted_in = time.monotonic() - killed_at
    record |= {"restarted_pid": ready["pid"], "polling_again_after_seconds": round(restarted_in, 2)}
    print(
        f"  worker process {slot} polling again (pid {ready['pid']}) "
        f"{restarted_in:.1f}s after the kill",
        flush=True,
    )


async def after_the_kill(
    client: Client,
    killer: asyncio.Task[None],
    kill: dict[str, Any],
    workflow_ids: list[str],
    timeout: float,
) -> dict[str, Any]:
    """Once the close's webhooks arrived: the kill's record (``webhooks_at_kill`` None when
    the close ended first), how every period's workflow ended, and the work done again."""
    if kill.get("webhooks_at_kill") is None:
        killer.cancel()  # the close ended before the kill
    with contextlib.suppress(asyncio.CancelledError):
        await killer  # a restart under way finishes first
    outcomes = await bounded_gather(
        [period_outcome(client, workflow_id, timeout) for workflow_id in workflow_ids],
        OUTCOME_CONCURRENCY,
    )
    return {
        "kill": kill,
        "workflows": dict(collections.Counter(outcomes)),
        "repeated_work": await retried_work(client, workflow_ids),
    }


def read_ledger(
    engine: sqlalchemy.Engine, period_start: datetime
) -> dict[str, list[dict[str, Any]]]:
    """The invoices of the period, the entities' sequences and the invoices' deliveries."""
    with engine.connect() as connection:
        invoices = connection.execute(
            text(
                "SELECT id, subscription_external_id, billing_entity_code, status, number"
                " FROM invoices WHERE period_start = :start"
            ),
            {"start": period_start},
        )
        invoice_rows = [dict(row._mapping) for row in invoices]
        sequences = connection.execute(
            text("SELECT billing_entity_code, last_number FROM invoice_sequences")
        )
        sequence_rows = [dict(row._mapping) for row in sequences]
        deliveries = connection.execute(
            text(
                "SELECT d.id, d.invoice_id, d.webhook_type, d.status, d.attempts"
                " FROM webhook_deliveries d JOIN invoices i ON i.id = d.invoice_id"
                " WHERE i.period_start = :start"
            ),
            {"start": period_start},
        )
        delivery_rows = [dict(row._mapping) for row in deliveries]
    return {"invoices": invoice_rows, "sequences": sequence_rows, "deliveries": delivery_rows}


def exactly_once(
    subscriptions: Sequence[str],
    ledger: dict[str, list[dict[str, Any]]],
    received: Sequence[dict[str, Any]],
) -> tuple[dict[str, Any], list[str]]:
    """The figures of the checks in the module doc, and every problem found (none: passed).

    ``received``: one entry per request the receiver got (bench/_sink.py's JSON lines).
    """
    problems: list[str] = []
    invoices = ledger["invoices"]

    def note(what: str, items: Sequence[Any]) -> None:
        if items:
            shown = ", ".join(str(i) for i in list(items)[:5])
            more = f" (and {len(items) - 5} more)" if len(items) > 5 else ""
            problems.append(f"{what}: {len(items)}: {shown}{more}")

    per_subscription = collections.Counter(i["subscription_external_id"] for i in invoices)
    note("periods without an invoice", [s for s in subscriptions if s not in per_subscription])
    note("periods with several invoices", [s for s, n in per_subscription.items() if n > 1])
    statuses = collections.Counter(str(i["status"]) for i in invoices)
    note(
        "invoices not finalized",
        [f"{i['id']} {i['status']}" for i in invoices if i["status"] != "finalized"],
    )

    # Gapless numbers per billing entity: 1..n once each, and the sequence at n.
    numbers: dict[str, list[int]] = collections.defaultdict(list)
    malformed = []
    for invoice in invoices:
        if invoice["status"] != "finalized":
            continue
        _, _, digits = str(invoice["number"] or "").rpartition("-")
        if digits.isdigit():
            numbers[invoice["billing_entity_code"]].append(int(digits))
        else:
            malformed.append(f"{invoice['id']} {invoice['number']!r}")
    note("finalized invoices without a number", malformed)
    last_numbers = {s["billing_entity_code"]: int(s["last_number"]) for s in ledger["sequences"]}
    sequences: dict[str, Any] = {}
    for entity, used in sorted(numbers.items()):
        counted = collections.Counter(used)
        gaps = sorted(set(range(1, max(used) + 1)) - set(used))
        duplicates = sorted(n for n, times in counted.items() if times > 1)
        sequences[entity] = {
            "numbers": len(used),
            "first": min(used),
            "last": max(used),
            "gaps": len(gaps),
            "duplicates": len(duplicates),
            "sequence_last_number": last_numbers.get(entity),
        }
        note(f"gaps in the numbers of {entity}", gaps)
        note(f"numbers of {entity} used twice", duplicates)
        if last_numbers.get(entity) != len(used):
            problems.append(
                f"the sequence of {entity} stands at {last_numbers.get(entity)}, "
                f"{len(used)} invoices numbered"
            )

    # One invoice.created delivery per finalized invoice, succeeded.
    finalized = {i["id"] for i in invoices if i["status"] == "finalized"}
    created = [d for d in ledger["deliveries"] if d["webhook_type"] == INVOICE_CREATED]
    delivery_of: dict[str, list[str]] = collections.defaultdict(list)
    for delivery in created:
        delivery_of[delivery["invoice_id"]].append(delivery["id"])
    note(
        "finalized invoices without one invoice.created delivery",
        sorted(i for i in finalized if len(delivery_of.get(i, [])) != 1),
    )
    note(
        "deliveries not succeeded",
        [f"{d['id']} {d['status']}" for d in created if d["status"] != "succeeded"],
    )

    # What the receiver saw: per invoice, the webhook ids and the copies left after dedupe.
    requests = [r for r in received if r.get("type") == INVOICE_CREATED]
    ids_of: dict[str, set[str]] = collections.defaultdict(set)
    first_copies: collections.Counter[str] = collections.Counter()
    for request in requests:
        invoice_id = str(request.get("invoice_id"))
        ids_of[invoice_id].add(str(request.get("webhook_id")))
        if request.get("accepted") and not request.get("duplicate"):
            first_copies[invoice_id] += 1
    known = {d["id"]: d["invoice_id"] for d in created}
    note("invoices whose webhook never arrived", sorted(i for i in finalized if i not in ids_of))
    note(
        "invoices that got two different webhooks",
        sorted(i for i, ids in ids_of.items() if len(ids) > 1),
    )
    note(
        "webhooks whose id is not their invoice's delivery",
        sorted(f"{i} {w}" for i, ids in ids_of.items() for w in ids if known.get(w) != i),
    )
    note(
        "invoices without exactly one copy after dedupe by webhook id",
        sorted(f"{i} {first_copies[i]}" for i in finalized | set(ids_of) if first_copies[i] != 1),
    )
    note(
        "webhooks with a bad signature",
        [r.get("webhook_id") for r in requests if r.get("verified") is not True],
    )
    distinct_ids = {str(r.get("webhook_id")) for r in requests}
    figures = {
        "periods": len(subscriptions),
        "invoices": len(invoices),
        "invoices_by_status": dict(sorted(statuses.items())),
        "numbers_by_billing_entity": sequences,
        "invoice_created_deliveries": len(created),
        "deliveries_attempted_more_than_once": sum(1 for d in created if (d["attempts"] or 0) > 1),
        "receiver_requests": len(requests),
        "receiver_distinct_webhook_ids": len(distinct_ids),
        "redeliveries": len(requests) - len(distinct_ids),
        "requests_flagged_duplicate_by_receiver": sum(1 for r in requests if r.get("duplicate")),
        "copies_after_dedupe": sum(first_copies.values()),
        "other_requests": len(received) - len(requests),
    }
    return figures, problems


async def retried_work(client: Client, workflow_ids: Sequence[str]) -> dict[str, Any]:
    """What the kill made Temporal do again, read from the periods' histories."""
    attempts: collections.Counter[str] = collections.Counter()
    timed_out: collections.Counter[str] = collections.Counter()
    periods_touched = 0

    async def scan(workflow_id: str) -> None:
        nonlocal periods_touched
        scheduled: dict[int, str] = {}
        touched = False
        handle = client.get_workflow_handle(workflow_id)
        async for event in handle.fetch_history_events():
            kind = event.event_type
            if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                name = event.activity_task_scheduled_event_attributes.activity_type.name
                scheduled[event.event_id] = name
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                started = event.activity_task_started_event_attributes
                if started.attempt > 1:
                    attempts[scheduled.get(started.scheduled_event_id, "?")] += started.attempt - 1
                    touched = True
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
                timed_out["workflow_task"] += 1
                touched = True
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
                timed_out["activity"] += 1
                touched = True
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                timed_out["workflow_task_failed"] += 1
                touched = True
        periods_touched += touched

    await bounded_gather([scan(w) for w in workflow_ids], HISTORY_CONCURRENCY)
    return {
        "periods_with_repeated_work": periods_touched,
        "activity_retries_by_type": dict(sorted(attempts.items())),
        "workflow_tasks_timed_out": timed_out["workflow_task"],
        "workflow_tasks_failed": timed_out["workflow_task_failed"],
        "activities_timed_out_for_good": timed_out["activity"],
    }


async def period_outcome(client: Client, workflow_id: str, timeout: float) -> str:
    """How a period's workflow ended: ``completed``, or the error that ended it."""
    try:
        await asyncio.wait_for(client.get_workflow_handle(workflow_id).result(), timeout)
    except Exception as error:  # the kind of failure is the figure
        return type(error).__name__
    return "completed"


def check_fault(
    fault: dict[str, Any],
    subscriptions: list[str],
    ledger: dict[str, list[dict[str, Any]]],
    received: list[dict[str, Any]],
) -> dict[str, Any]:
    """``exactly_once`` and the kill's own checks, into the result; prints the figures."""
    figures, problems = exactly_once(subscriptions, ledger, received)
    if fault["kill"]["webhooks_at_kill"] is None:
        problems.append("no worker process was killed: the close ended first")
    not_completed = {k: v for k, v in fault["workflows"].items() if k != "completed"}
    if not_completed:
        problems.append(f"period workflows not completed: {not_completed}")
    fault |= figures
    fault["problems"] = problems
    numbers = ", ".join(
        f"{entity} 1..{n['last']} ({n['gaps']} gaps, {n['duplicates']} duplicates, "
        f"sequence at {n['sequence_last_number']})"
        for entity, n in figures["numbers_by_billing_entity"].items()
    )
    print(
        f"  fault: killed after {fault['kill']['webhooks_at_kill']} webhooks; workflows "
        f"{fault['workflows']}; invoices {figures['invoices_by_status']}; numbers {numbers}; "
        f"webhook requests {figures['receiver_requests']} for "
        f"{figures['receiver_distinct_webhook_ids']} webhook ids "
        f"({figures['redeliveries']} redeliveries), {figures['copies_after_dedupe']} left "
        f"after dedupe; repeated work {fault['repeated_work']}",
        flush=True,
    )
    for problem in problems:
        print(f"  FAULT CHECK FAILED: {problem}", flush=True)
    return fault
