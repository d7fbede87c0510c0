"""Approval holds and finalization under faults (issue 15, "Done when"): a real Temporal
dev server with a persistent state file, real ``billing worker`` processes, a fresh
PostgreSQL schema and a real webhook receiver. Each test checks what a user sees: the
invoice's status and number, its search attribute and phase, its timeline, and the webhooks
that reached the receiver.

- A held invoice stays held through a worker SIGKILL and through a server restart, then an
  approval finalizes it once.
- A finalization whose worker died after the database committed it, before Temporal heard
  of it, is retried (after the store step's 60 s start-to-close timeout: the bulk of this
  module's run time) and leaves one ``finalized`` entry, one number, one webhook.
- Approvals racing finalize-now requests, and grace changes racing the grace timer,
  finalize once.
- A 200-character subscription id (the longest the catalog takes) keeps every timeline
  entry of a held-then-approved lifecycle, as a short one does.
- A delivery workflow already running when a step is done again (a period started again
  after it was terminated) does not fail the period.

The worker processes run the product's ``billing worker`` command through a launcher that
adds one fault point: when the test arms it, the finalization of one invoice commits and
then the activity hangs, so that the test can SIGKILL the worker at that exact moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import Engine, text
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from billing.approval import ApprovalStatus
from billing.models import Invoice, InvoiceStatus, UsageEvent
from billing.timeline import TimelineKind
from services.catalog import load_catalog
from services.invoices import get_invoice
from services.timeline import invoice_timeline
from services.webhooks import list_deliveries
from starter.webhook_sink import WebhookSink
from store.db import make_engine
from tests.deploy.test_topology import wait_for_pollers
from tests.fixtures.database import migrated_schema
from tests.fixtures.periods import JANUARY, SECRET, PeriodHarness, period_catalog
from tests.fixtures.periods import workflow_task_failures as task_failures
from tests.reliability.support import until
from tests.reliability.test_server_restart import DevServer
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import (
    AddUsage,
    ApproveInvoice,
    EditFee,
    FinalizeInvoice,
    PeriodPhase,
    RecomputeGracePeriod,
    RefreshInvoice,
)
from workflows.search_attributes import INVOICE_STATUS
from workflows.webhook_delivery import webhook_delivery_workflow_id

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.e2e, pytest.mark.fault]

ROOT = Path(__file__).resolve().parents[2]
HELD_RULE = {"total_above_cents": 5000}  # sub_pro's $100 plan is held
CREATED = "invoice.created"
DRAFTED = "invoice.drafted"
APPROVAL_REQUIRED = "invoice.approval_required"
# The store step's start-to-close timeout (workflows/store_steps.py) plus margin: how long a
# finalization held by a killed worker waits before Temporal retries it.
RETRY_AFTER_KILL = 100.0
LONG_ID_LENGTH = 200  # the catalog's limit for a subscription external id

# `billing worker`, with one fault point. When the file named by APPROVAL_FAULTS_ARM holds
# an invoice id, finalizing that invoice commits, writes APPROVAL_FAULTS_FROZEN, then hangs:
# the transaction is done and the activity's result never reaches Temporal.
LAUNCHER = """
import os, sys, time
from pathlib import Path
from services import finalization

arm, frozen = Path(os.environ["APPROVAL_FAULTS_ARM"]), Path(os.environ["APPROVAL_FAULTS_FROZEN"])
finalize = finalization.finalize_invoice

def finalize_then_hang(engine, invoice_id, *args, **kwargs):
    outcome = finalize(engine, invoice_id, *args, **kwargs)
    if not outcome.held and arm.exists() and arm.read_text() == invoice_id:
        frozen.write_text(invoice_id)
        while True:
            time.sleep(60)
    return outcome

finalization.finalize_invoice = finalize_then_hang
from starter.cli import main
sys.argv = ["billing", "worker"]
sys.exit(main())
"""


class WorkerProcess:
    """One ``billing worker`` process (through :data:`LAUNCHER`), configured by env vars."""

    def __init__(self, address: str, task_queue: str, database_url: str, directory: Path) -> None:
        self.directory = directory
        self.task_queue = task_queue
        self.arm = directory / f"arm-{task_queue}"
        self.frozen = directory / f"frozen-{task_queue}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "BILLING_"))}
        self.env = env | {
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": "default",
            "BILLING_TASK_QUEUE": task_queue,
            "BILLING_DATABASE_URL": database_url,
            "BILLING_DATA_DIR": str(directory / "data"),
            "BILLING_LOG_LEVEL": "INFO",
            "APPROVAL_FAULTS_ARM": str(self.arm),
            "APPROVAL_FAULTS_FROZEN": str(self.frozen),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def identity(self) -> str:
        assert self.process is not None
        return f"{self.process.pid}@{os.uname().nodename}"

    async def start(self, client: Client) -> None:
        """Start it; return once the server sees it poll."""
        self.starts += 1
        log = (self.directory / f"worker-{self.task_queue}-{self.starts}.log").open("wb")
        with log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", LAUNCHER],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        polling = asyncio.ensure_future(wait_for_pollers(client, self.task_queue, {self.identity}))
        while not polling.done():
            if not self.alive():
                polling.cancel()
                raise AssertionError(f"the worker exited at start:\n{self.logs()}")
            await asyncio.sleep(0.1)
        await polling

    def kill(self) -> None:
        """SIGKILL: no shutdown, no activity result reported."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=25)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.directory.glob(f"worker-{self.task_queue}-*.log"))
        )


@dataclass
class Stack:
    server: DevServer
    client: Client
    engine: Engine
    sink: WebhookSink
    worker: WorkerProcess
    directory: Path

    def harness(self, suffix: str | None = None) -> PeriodHarness:
        """A :class:`PeriodHarness` on this stack (its own subscription ids)."""
        env: Any = SimpleNamespace(client=self.client)
        suffix = f"-{uuid.uuid4().hex[:8]}" if suffix is None else suffix
        return PeriodHarness(env, self.engine, self.sink, self.worker.task_queue, suffix)


def catalog(
    webhook_url: str,
    subscriptions: dict[str, str],
    *,
    race_grace_days: int = 1,
) -> dict[str, Any]:
    """The period test catalog with an approval rule on ``acme``, a billing entity ``race``
    (no rule, its own numbers), ``invoice.drafted`` webhooks, and only ``subscriptions``
    (external id -> customer), all on the $100 ``pro`` plan."""
    data = period_catalog(webhook_url)
    data["billing_entities"][0]["approval"] = HELD_RULE
    data["billing_entities"].append(
        {
            "code": "race",
            "name": "Race",
            "currency": "USD",
            "timezone": "UTC",
            "grace_period_days": race_grace_days,
            "invoice_prefix": "RACE",
        }
    )
    for entity in data["billing_entities"]:
        entity["send_invoice_drafted_webhook"] = True
    data["customers"].append(
        {"external_id": "cust_race", "billing_entity_code": "race", "name": "Race Ltd"}
    )
    data["subscriptions"] = [
        {
            "external_id": external_id,
            "customer_external_id": customer,
            "plan_code": "pro",
            "started_at": "2025-06-01T00:00:00Z",
        }
        for external_id, customer in subscriptions.items()
    ]
    data.pop("wallets")
    return data


def load(stack: Stack, harness: PeriodHarness, **customers: str) -> None:
    """Load the subscriptions ``name -> customer`` under the harness's ids."""
    subscriptions = {harness.sub(name): customer for name, customer in customers.items()}
    load_catalog(stack.engine, catalog(stack.sink.url, subscriptions))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def faults_database_url(postgres_server_url: str) -> Iterator[str]:
    with migrated_schema(postgres_server_url, "approval") as url:
        yield url


@pytest_asyncio.fixture(scope="module")
async def stack(
    faults_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """A dev server with a state file, a webhook receiver, a fresh PostgreSQL schema with
    the catalog, and one worker process, for the whole module."""
    database_url = faults_database_url
    directory = tmp_path_factory.mktemp("approval-faults")
    server = DevServer(directory)  # --db-filename: history and timers survive a restart
    server.start()
    engine = make_engine(database_url)
    sink = WebhookSink(secret=SECRET)
    worker: WorkerProcess | None = None
    try:
        client = await server.connect()
        await sink.start("127.0.0.1", 0)
        load_catalog(engine, catalog(sink.url, {}))
        worker = WorkerProcess(server.address, f"approval-{uuid.uuid4()}", database_url, directory)
        await worker.start(client)
        yield Stack(server, client, engine, sink, worker, directory)
    except BaseException:
        if worker is not None:
            print(worker.logs())
        raise
    finally:
        if worker is not None:
            worker.stop()
        await sink.stop()
        engine.dispose()
        server.stop()


# --------------------------------------------------------------------------- helpers


def invoices_of(engine: Engine, subscription: str) -> list[tuple[str, str, str]]:
    """(id, status, number) of every invoice of the subscription."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT id, status, number FROM invoices"
                " WHERE subscription_external_id = :s ORDER BY created_at"
            ),
            {"s": subscription},
        ).all()
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


def last_number(engine: Engine, entity: str) -> int:
    with engine.connect() as connection:
        value = connection.execute(
            text("SELECT last_number FROM invoice_sequences WHERE billing_entity_code = :e"),
            {"e": entity},
        ).scalar_one_or_none()
    return int(value or 0)


def kinds(engine: Engine, invoice_id: str) -> list[TimelineKind]:
    return [entry.kind for entry in invoice_timeline(engine, invoice_id)]


def received(sink: WebhookSink, invoice_id: str, webhook_type: str) -> list[str]:
    """Webhook ids of the accepted (2xx, not a redelivery) webhooks of this invoice."""
    found = []
    for record in sink.accepted:
        payload = record.payload()
        if payload["webhook_type"] == webhook_type and payload["invoice"]["id"] == invoice_id:
            found.append(record.webhook_id or "")
    return found


async def delivered(stack: Stack, invoice_id: str, webhook_type: str, timeout: float = 30) -> None:
    """Wait until the receiver accepted the webhook and its delivery row says succeeded."""

    async def probe() -> tuple[list[str], set[str]]:
        rows = await asyncio.to_thread(list_deliveries, stack.engine, invoice_id=invoice_id)
        statuses = {d.status for d in rows if d.webhook_type == webhook_type}
        return received(stack.sink, invoice_id, webhook_type), statuses

    await until(
        probe,
        lambda found: len(found[0]) >= 1 and found[1] == {"succeeded"},
        timeout=timeout,
        what=f"{webhook_type} of {invoice_id} delivered",
    )


async def assert_held(stack: Stack, handle: WorkflowHandle[Any, Any], invoice_id: str) -> None:
    """What an operator sees of a held invoice: phase, search attribute, status, approval."""
    view = await handle.query(BillingPeriodWorkflow.invoice)
    assert view.phase == PeriodPhase.AWAITING_APPROVAL
    assert view.invoice is not None and view.invoice.status == InvoiceStatus.DRAFT
    found = (await handle.describe()).typed_search_attributes
    assert found.get(INVOICE_STATUS) == "awaiting_approval"
    stored = get_invoice(stack.engine, invoice_id)
    assert stored.status == InvoiceStatus.DRAFT
    assert stored.approval is not None and stored.approval.status == ApprovalStatus.REQUIRED
    assert TimelineKind.FINALIZED not in kinds(stack.engine, invoice_id)


async def assert_finalized_once(
    stack: Stack,
    handle: WorkflowHandle[Any, Any],
    subscription: str,
    result: Invoice,
    *,
    approved: bool = True,
) -> None:
    """One invoice, finalized, one number, one ``finalized`` (and ``approved``) entry, one
    invoice.created delivery that reached the receiver once, no workflow task failure."""
    rows = invoices_of(stack.engine, subscription)
    assert len(rows) == 1, rows
    invoice_id, status, number = rows[0]
    assert (status, number) == ("finalized", result.number)
    assert result.id == invoice_id and result.status == InvoiceStatus.FINALIZED
    count = Counter(kinds(stack.engine, invoice_id))
    assert count[TimelineKind.FINALIZED] == 1, count
    assert count[TimelineKind.APPROVED] == (1 if approved else 0), count
    await delivered(stack, invoice_id, CREATED)
    created = [
        d for d in list_deliveries(stack.engine, invoice_id=invoice_id) if d.webhook_type == CREATED
    ]
    assert len(created) == 1, created
    assert received(stack.sink, invoice_id, CREATED) == [created[0].id]
    found = (await handle.describe()).typed_search_attributes
    assert found.get(INVOICE_STATUS) == "finalized"
    assert await code_failures(handle) == []


async def code_failures(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """Workflow task failures, but for the server's ``UnhandledCommand``: a task that would
    complete the workflow while a signal had just arrived is refused by the server and
    simply run again with the signal (Temporal's own guard against losing a signal)."""
    return [f for f in await task_failures(handle) if f != "UnhandledCommand"]


async def hold(harness: PeriodHarness, stack: Stack, name: str) -> tuple[Any, str]:
    """Start a period of ``name`` that is held for approval once its 1 s grace period ends;
    returns its handle and invoice id once its webhooks have been delivered."""
    handle = await harness.start(name, grace_period_seconds=1)
    view = await harness.wait_for(handle, lambda v: v.phase == PeriodPhase.AWAITING_APPROVAL)
    assert view.invoice is not None
    invoice_id = view.invoice.id
    await delivered(stack, invoice_id, DRAFTED)
    await delivered(stack, invoice_id, APPROVAL_REQUIRED)
    return handle, invoice_id


async def result_of(handle: WorkflowHandle[Any, Any], timeout: float) -> Invoice:
    """The period's result, asking again when a long poll breaks (server restart)."""

    async def poll() -> Invoice:
        while True:
            with contextlib.suppress(Exception):
                invoice: Invoice = await handle.result()
                return invoice
            await asyncio.sleep(0.5)

    return await asyncio.wait_for(poll(), timeout)


def finalization_was_run_again(events: list[Any]) -> bool:
    """Whether the approved finalization's first run was lost with its worker: the
    finalization is a local activity, so the killed worker's workflow task timed out after
    the approval arrived, and the step's marker was recorded by the next worker."""
    approved = next(
        i
        for i, e in enumerate(events)
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        and e.workflow_execution_signaled_event_attributes.signal_name == "approve_invoice"
    )
    finalized = max(
        i
        for i, e in enumerate(events)
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
        and b'"finalize_invoice"'
        in e.marker_recorded_event_attributes.details["data"].payloads[0].data
    )
    return any(
        e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
        for e in events[approved:finalized]
    )


# --------------------------------------------------------------------------- crashes


async def test_a_held_invoice_stays_held_through_a_worker_crash(stack: Stack) -> None:
    harness = stack.harness()
    load(stack, harness, sub_pro="cust_inherit")
    handle, invoice_id = await hold(harness, stack, "sub_pro")
    await assert_held(stack, handle, invoice_id)

    stack.worker.kill()
    await stack.worker.start(stack.client)
    await asyncio.sleep(2)  # time for anything the restart might wrongly redo
    await assert_held(stack, handle, invoice_id)
    assert await code_failures(handle) == []

    final = await handle.execute_update(
        BillingPeriodWorkflow.approve_invoice_sync, ApproveInvoice(requested_by="alice")
    )
    assert final.status == InvoiceStatus.FINALIZED
    assert final.approval is not None and final.approval.approved_by == "alice"
    result = await result_of(handle, 30)
    await assert_finalized_once(stack, handle, harness.sub("sub_pro"), result)


async def test_a_held_invoice_stays_held_through_a_server_restart(stack: Stack) -> None:
    harness = stack.harness()
    load(stack, harness, sub_pro="cust_inherit")
    handle, invoice_id = await hold(harness, stack, "sub_pro")

    stack.server.stop()  # SIGTERM; history, timers and search attributes live in its file
    await asyncio.sleep(2)
    stack.server.start()
    await stack.server.connect()
    await until(
        lambda: handle.query(BillingPeriodWorkflow.invoice),
        lambda view: view.phase == PeriodPhase.AWAITING_APPROVAL,
        timeout=60,
        what="the held period answering after the restart",
    )
    assert stack.worker.alive(), stack.worker.logs()  # the worker rode out the outage
    await asyncio.sleep(2)
    await assert_held(stack, handle, invoice_id)

    await handle.signal(BillingPeriodWorkflow.approve_invoice, ApproveInvoice(requested_by="bob"))
    result = await result_of(handle, 60)
    assert result.approval is not None and result.approval.approved_by == "bob"
    await assert_finalized_once(stack, handle, harness.sub("sub_pro"), result)


async def test_a_finalization_retried_after_a_crash_is_recorded_once(stack: Stack) -> None:
    harness = stack.harness()
    load(stack, harness, sub_pro="cust_inherit")
    handle, invoice_id = await hold(harness, stack, "sub_pro")
    acme_before = last_number(stack.engine, "acme")

    worker = stack.worker
    worker.arm.write_text(invoice_id)
    try:
        await handle.signal(
            BillingPeriodWorkflow.approve_invoice, ApproveInvoice(requested_by="carol")
        )
        await until(
            lambda: asyncio.to_thread(worker.frozen.exists),
            bool,
            timeout=30,
            what="the finalization committed and hanging",
        )
        # Committed in the database; Temporal has not heard of it.
        committed = get_invoice(stack.engine, invoice_id)
        assert committed.status == InvoiceStatus.FINALIZED
        view = await handle.query(BillingPeriodWorkflow.invoice)
        assert view.phase == PeriodPhase.FINALIZING
        worker.kill()
    finally:
        worker.arm.unlink(missing_ok=True)
        worker.frozen.unlink(missing_ok=True)
    await worker.start(stack.client)

    result = await result_of(handle, RETRY_AFTER_KILL)
    assert result.number == committed.number
    assert result.approval is not None and result.approval.approved_by == "carol"
    await assert_finalized_once(stack, handle, harness.sub("sub_pro"), result)
    assert last_number(stack.engine, "acme") == acme_before + 1  # no number burnt
    events = [event async for event in handle.fetch_history_events()]
    assert finalization_was_run_again(events)  # the committed step ran again
    # The timeline reads as one story: held, approved, finalized, each once.
    story = [k for k in kinds(stack.engine, invoice_id) if not k.startswith("webhook_")]
    assert story[-3:] == [
        TimelineKind.APPROVAL_REQUIRED,
        TimelineKind.APPROVED,
        TimelineKind.FINALIZED,
    ]
    assert Counter(story)[TimelineKind.APPROVAL_REQUIRED] == 1


# --------------------------------------------------------------------------- races


async def race_approve_and_finalize(handle: WorkflowHandle[Any, Any]) -> list[Any]:
    """Signals and updates of approve and finalize-now, all sent at once."""
    return await asyncio.gather(
        handle.signal(BillingPeriodWorkflow.finalize_invoice, FinalizeInvoice(requested_by="f1")),
        handle.signal(BillingPeriodWorkflow.approve_invoice, ApproveInvoice(requested_by="a1")),
        handle.execute_update(
            BillingPeriodWorkflow.finalize_invoice_sync, FinalizeInvoice(requested_by="f2")
        ),
        handle.execute_update(
            BillingPeriodWorkflow.approve_invoice_sync, ApproveInvoice(requested_by="a2")
        ),
        handle.signal(BillingPeriodWorkflow.approve_invoice, ApproveInvoice(requested_by="a3")),
        return_exceptions=True,
    )


def check_answer(answer: object, result: Invoice, *, held_allowed: bool) -> None:
    """An update's answer in the race: the final invoice (the same number), the held draft
    (finalize-now only), or, sent once the invoice was final, a refusal that says so. One
    sent while the finalization runs waits for it: it is what the caller asked for."""
    if isinstance(answer, WorkflowUpdateFailedError):
        assert isinstance(answer.cause, ApplicationError), answer.cause
        assert answer.cause.type == "InvoiceNotEditable", answer.cause
        assert f"{result.number} is finalized" in answer.cause.message  # sent after it
        return
    assert isinstance(answer, Invoice), answer
    assert answer.id == result.id
    if answer.status == InvoiceStatus.DRAFT and held_allowed:
        assert answer.approval is not None
        assert answer.approval.status == ApprovalStatus.REQUIRED
    else:
        assert (answer.status, answer.number) == (InvoiceStatus.FINALIZED, result.number)


async def test_approvals_racing_finalize_now_finalize_once(stack: Stack) -> None:
    harness = stack.harness()
    load(stack, harness, sub_pro="cust_inherit", sub_skip_paid="cust_skip")
    # One still in its grace period (an hour), one already held.
    drafting = await harness.start("sub_pro", grace_period_seconds=3600)
    await harness.wait_for_draft(drafting)
    held, _ = await hold(harness, stack, "sub_skip_paid")

    answers = await asyncio.gather(
        race_approve_and_finalize(drafting), race_approve_and_finalize(held)
    )
    for name, handle, answer in zip(
        ("sub_pro", "sub_skip_paid"), (drafting, held), answers, strict=True
    ):
        result = await result_of(handle, 30)
        assert result.approval is not None
        assert result.approval.approved_by in {"a1", "a2", "a3"}
        await assert_finalized_once(stack, handle, harness.sub(name), result)
        signals = [answer[i] for i in (0, 1, 4)]
        assert signals == [None, None, None], signals
        check_answer(answer[2], result, held_allowed=True)  # finalize_invoice_sync
        check_answer(answer[3], result, held_allowed=False)  # approve_invoice_sync


# --------------------------------------------------------------------------- long ids

# What a held-then-approved lifecycle writes in the timeline, webhooks aside; a refresh
# that changes nothing records nothing.
LIFECYCLE_STORY = [
    (TimelineKind.DRAFT_CREATED, "system"),
    (TimelineKind.USAGE_RECORDED, "meter"),
    (TimelineKind.REFRESHED, "system"),
    (TimelineKind.FEE_ADJUSTED, "carol"),
    (TimelineKind.APPROVAL_REQUIRED, "bob"),
    (TimelineKind.FEE_ADJUSTED, "dave"),
    (TimelineKind.APPROVED, "alice"),
    (TimelineKind.FINALIZED, "alice"),
]


async def held_then_approved(harness: PeriodHarness, name: str) -> Invoice:
    """Draft; usage and the refresh it causes; an edit; held; an edit while held; approved."""
    handle = await harness.start(name, grace_period_seconds=3600)
    await harness.wait_for_draft(handle)
    event = UsageEvent(
        transaction_id=f"tx-{harness.suffix[-8:]}",
        external_subscription_id=harness.sub(name),
        code="api_calls",
        timestamp=JANUARY[0] + timedelta(days=3),
    )
    await handle.execute_update(
        BillingPeriodWorkflow.add_usage_sync, AddUsage(events=[event], requested_by="meter")
    )
    # The usage refreshes the draft (debounce 0): one API call is one cent.
    await harness.wait_for(
        handle, lambda v: v.invoice is not None and v.invoice.total_amount_cents == 10001
    )
    await handle.execute_update(
        BillingPeriodWorkflow.edit_fee_sync,
        EditFee(charge_code="seats", mode="units", units=Decimal(2), requested_by="carol"),
    )
    held = await handle.execute_update(
        BillingPeriodWorkflow.finalize_invoice_sync, FinalizeInvoice(requested_by="bob")
    )
    assert held.status == InvoiceStatus.DRAFT
    await handle.execute_update(
        BillingPeriodWorkflow.edit_fee_sync,
        EditFee(charge_code="seats", mode="units", units=Decimal(3), requested_by="dave"),
    )
    await handle.execute_update(
        BillingPeriodWorkflow.refresh_invoice_sync, RefreshInvoice(requested_by="erin")
    )
    final = await handle.execute_update(
        BillingPeriodWorkflow.approve_invoice_sync, ApproveInvoice(requested_by="alice")
    )
    assert final.status == InvoiceStatus.FINALIZED
    assert final.total_amount_cents == 10001 + 1500  # both edits billed
    result = await result_of(handle, 30)
    assert await code_failures(handle) == []
    return result


@pytest.mark.parametrize(
    "length",
    [
        pytest.param(16, id="short-id"),
        # Its step keys outgrow the timeline's key column: stored as a prefix and their
        # SHA-256 (store/timeline.py), they stay distinct (before, cut at 300 characters,
        # they collided and the refresh and both fee adjustments went missing).
        pytest.param(LONG_ID_LENGTH, id="200-character-id"),
    ],
)
async def test_a_held_then_approved_lifecycle_keeps_every_timeline_entry(
    stack: Stack, length: int
) -> None:
    unique = uuid.uuid4().hex[:8]
    suffix = "-" + unique.rjust(length - len("sub_pro") - 1, "x")
    harness = stack.harness(suffix=suffix)
    assert len(harness.sub("sub_pro")) == length
    load(stack, harness, sub_pro="cust_inherit")
    result = await held_then_approved(harness, "sub_pro")
    entries = invoice_timeline(stack.engine, result.id)
    story = [(e.kind, e.actor) for e in entries if not e.kind.startswith("webhook_")]
    assert story == LIFECYCLE_STORY
    assert entries[-1].total_amount_cents == result.total_amount_cents


# --------------------------------------------------------------------------- a retried start


async def refused_starts(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """Ids of the child workflows whose start the server refused (already started)."""
    return [
        event.start_child_workflow_execution_failed_event_attributes.workflow_id
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED
    ]


async def test_a_delivery_already_started_does_not_fail_a_period_started_again(
    stack: Stack,
) -> None:
    harness = stack.harness()
    load(stack, harness, sub_race="cust_race")
    stack.sink.respond_with(503)  # receiver down: the drafted webhook keeps retrying
    try:
        first = await harness.start("sub_race", grace_period_seconds=3600)
        view = await harness.wait_for_draft(first)
        assert view.invoice is not None
        invoice_id = view.invoice.id
        retrying = await until(
            lambda: asyncio.to_thread(list_deliveries, stack.engine, invoice_id=invoice_id),
            lambda rows: len(rows) == 1 and rows[0].attempts >= 1,
            timeout=30,
            what="a failed attempt of the drafted webhook",
        )
        # An operator terminates the period and starts it again: the draft step runs again,
        # returns the same delivery, and starts its delivery workflow, which still runs.
        await first.terminate("started again by an operator")
        again = await harness.start("sub_race", grace_period_seconds=3600)
        assert again.result_run_id != first.result_run_id
        refused = await until(
            lambda: refused_starts(again),
            lambda refused: len(refused) == 1,
            timeout=30,
            what="the second start of the same delivery workflow refused by the server",
        )
        assert refused == [webhook_delivery_workflow_id(retrying[0].id, 1)]
        await asyncio.sleep(1)  # time for the period to go on, or to fail
        assert (await again.describe()).status == WorkflowExecutionStatus.RUNNING
        assert (await harness.view(again)).phase == PeriodPhase.DRAFT
    finally:
        stack.sink.reset()
    await delivered(stack, invoice_id, DRAFTED, timeout=40)  # by the first delivery workflow
    await again.signal(BillingPeriodWorkflow.finalize_invoice, FinalizeInvoice())
    result = await result_of(again, 30)
    await assert_finalized_once(stack, again, harness.sub("sub_race"), result, approved=False)
    assert len(received(stack.sink, invoice_id, DRAFTED)) == 1


# --------------------------------------------------------------------------- the grace timer


RACE_OFFSETS = (-1.5, -0.7, -0.3, -0.1, 0.0, 0.1, 0.3, 0.7, 1.5)  # seconds from the deadline
LEAD = timedelta(seconds=7)  # how far ahead the grace timers are brought


def drafted_a_day_ago(engine: Engine, invoice_ids: list[str], deadline: datetime) -> None:
    """Date the drafts back so that their one-day grace period ends at ``deadline``: what
    a draft made yesterday looks like (the dev server's clock cannot be moved)."""
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE invoices SET drafted_at = :at WHERE id = :id"),
            [{"at": deadline - timedelta(days=1), "id": i} for i in invoice_ids],
        )


async def test_grace_changes_racing_the_grace_timer_finalize_once(stack: Stack) -> None:
    """Periods whose grace period follows their billing entity's setting (one day), with
    grace timers a few seconds from firing; the setting drops to 0 days and each period is
    told to recompute at its own offset from its deadline: before the timer fires, as it
    fires, and after. Each is finalized once, by whichever came first."""
    harness = stack.harness()
    names = [f"sub_race_{i}" for i in range(len(RACE_OFFSETS))]
    subscriptions = {harness.sub(name): "cust_race" for name in names}
    load_catalog(stack.engine, catalog(stack.sink.url, subscriptions, race_grace_days=1))
    race_before = last_number(stack.engine, "race")
    handles = [await harness.start(name) for name in names]  # grace follows the setting
    invoice_ids = []
    for handle in handles:
        view = await harness.wait_for_draft(handle)
        assert view.invoice is not None and view.grace_period_ends_at is not None
        invoice_ids.append(view.invoice.id)
    for invoice_id in invoice_ids:
        await delivered(stack, invoice_id, DRAFTED)

    # The timers are brought to `deadline` by the product itself: a recompute of a draft
    # dated a day back (the setting unchanged) moves its deadline and its timer.
    deadline = (datetime.now(UTC) + LEAD).replace(microsecond=0)
    drafted_a_day_ago(stack.engine, invoice_ids, deadline)
    ops = RecomputeGracePeriod(requested_by="ops")
    await asyncio.gather(
        *(h.signal(BillingPeriodWorkflow.recompute_grace_period, ops) for h in handles)
    )
    for handle in handles:
        await harness.wait_for(handle, lambda v: v.grace_period_ends_at == deadline)
    first_recompute = deadline + timedelta(seconds=min(RACE_OFFSETS))
    assert datetime.now(UTC) < first_recompute - timedelta(seconds=0.5), "LEAD is too short"
    load_catalog(stack.engine, catalog(stack.sink.url, subscriptions, race_grace_days=0))

    async def recompute_at(handle: WorkflowHandle[Any, Any], offset: float) -> None:
        await asyncio.sleep((deadline - datetime.now(UTC)).total_seconds() + offset)
        try:
            await handle.signal(
                BillingPeriodWorkflow.recompute_grace_period,
                RecomputeGracePeriod(requested_by="catalog"),
            )
        except RPCError as err:  # the timer won by far: the period already completed
            assert err.status == RPCStatusCode.NOT_FOUND, err

    await asyncio.gather(
        *(recompute_at(h, offset) for h, offset in zip(handles, RACE_OFFSETS, strict=True))
    )
    results = [await result_of(handle, 30) for handle in handles]

    moved = 0
    for name, handle, result in zip(names, handles, results, strict=True):
        await assert_finalized_once(stack, handle, harness.sub(name), result, approved=False)
        changes = [
            e
            for e in invoice_timeline(stack.engine, result.id)
            if e.kind == TimelineKind.GRACE_PERIOD_CHANGED
        ]
        assert [e.actor for e in changes] in (["ops"], ["ops", "catalog"]), changes
        moved += len(changes) == 2
    # Both orders happened: some recomputes moved the deadline, some came after the timer.
    assert 0 < moved < len(RACE_OFFSETS), moved
    assert last_number(stack.engine, "race") == race_before + len(RACE_OFFSETS)
    numbers = sorted(int((r.number or "").rpartition("-")[2]) for r in results)
    assert numbers == list(range(race_before + 1, race_before + len(RACE_OFFSETS) + 1))
