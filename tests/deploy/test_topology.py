"""The docker-compose topology without Docker: several worker processes of the app against
one Temporal server (the dev server) and one PostgreSQL database, completing periods together
while one worker is killed with SIGKILL.

Asserts what production relies on: every period completes, every invoice is finalized
exactly once, invoice numbers are gapless per billing entity, every webhook is delivered,
and periods held by the killed worker are finished by the others.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import Engine
from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from billing.models import InvoiceStatus
from services.catalog import load_catalog
from services.invoices import list_invoices
from services.webhooks import list_deliveries
from starter.periods import start_period
from starter.webhook_sink import WebhookSink
from store.db import make_engine
from tests.fixtures.database import migrated_schema
from workflows.messages import BillingPeriodInput

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.e2e, pytest.mark.fault]

ROOT = Path(__file__).resolve().parents[2]
BILLING = Path(sys.executable).with_name("billing")
SECRET = "whsec_topology"
WORKERS = 3
PERIODS_BEFORE_KILL = 12
PERIODS_AFTER_KILL = 8
PLAN_FEE_CENTS = 1500
JANUARY = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
ENTITIES = {"alpha": "ALPHA", "beta": "BETA"}
DEADLINE_SECONDS = 75.0


def catalog(webhook_url: str, subscriptions: int) -> dict[str, Any]:
    """Two billing entities; subscriptions alternate between them; a flat plan fee."""
    entity_codes = list(ENTITIES)
    return {
        "billing_entities": [
            {
                "code": code,
                "name": code.title(),
                "currency": "USD",
                "timezone": "UTC",
                "grace_period_days": 3,
                "invoice_prefix": prefix,
            }
            for code, prefix in ENTITIES.items()
        ],
        "customers": [
            {
                "external_id": f"cust_{i}",
                "billing_entity_code": entity_codes[i % 2],
                "name": f"Customer {i}",
            }
            for i in range(subscriptions)
        ],
        "billable_metrics": [
            {"code": "api_calls", "name": "API calls", "aggregation_type": "count"}
        ],
        "plans": [
            {
                "code": "flat",
                "name": "Flat",
                "amount_cents": PLAN_FEE_CENTS,
                "charges": [
                    {
                        "billable_metric_code": "api_calls",
                        "charge_model": "standard",
                        "properties": {"amount": "0.01"},
                    }
                ],
            }
        ],
        "subscriptions": [
            {
                "external_id": f"sub_{i}",
                "customer_external_id": f"cust_{i}",
                "plan_code": "flat",
                "started_at": "2025-06-01T00:00:00Z",
            }
            for i in range(subscriptions)
        ],
        "webhook_endpoints": [{"code": "sink", "url": webhook_url, "secret": SECRET}],
    }


@pytest.fixture
def topology_database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh schema on the PostgreSQL test server, migrated like `billing db upgrade`."""
    with migrated_schema(postgres_server_url, "topology") as url:
        yield url


@pytest_asyncio.fixture
async def sink() -> AsyncIterator[WebhookSink]:
    sink = WebhookSink(secret=SECRET)
    await sink.start("127.0.0.1", 0)
    try:
        yield sink
    finally:
        await sink.stop()


class WorkerProcesses:
    """``billing worker`` processes, configured only through environment variables."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, count: int) -> None:
        for index in range(count):
            log = (self.log_dir / f"worker-{index}.log").open("wb")
            self.processes.append(
                subprocess.Popen(
                    [str(BILLING), "worker"],
                    cwd=ROOT,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    def identity(self, index: int) -> str:
        """The Temporal client identity of a worker process (SDK default: pid@host)."""
        return f"{self.processes[index].pid}@{os.uname().nodename}"

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.log_dir.glob("worker-*.log"))
        )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=25)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def wait_for_pollers(client: Client, task_queue: str, identities: set[str]) -> None:
    deadline = asyncio.get_running_loop().time() + 60
    polling: set[str] = set()
    while True:
        try:
            response = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=task_queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                )
            )
            polling = {poller.identity for poller in response.pollers}
        except RPCError as err:
            # A dev server starved of CPU now and then cancels a describe: ask again.
            if err.status != RPCStatusCode.CANCELLED:
                raise
        if identities <= polling:
            return
        assert asyncio.get_running_loop().time() < deadline, f"pollers: {polling}"
        await asyncio.sleep(0.2)


async def workflow_task_identities(handle: WorkflowHandle[Any, Any]) -> list[str]:
    identities = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            identities.append(event.workflow_task_completed_event_attributes.identity)
    return identities


async def test_three_worker_processes_finish_every_period_when_one_is_killed(
    dev_env: WorkflowEnvironment,
    topology_database_url: str,
    sink: WebhookSink,
    tmp_path: Path,
) -> None:
    client = dev_env.client
    task_queue = f"topology-{uuid.uuid4()}"
    subscriptions = PERIODS_BEFORE_KILL + PERIODS_AFTER_KILL
    engine: Engine = make_engine(topology_database_url)
    load_catalog(engine, catalog(sink.url, subscriptions))

    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TEMPORAL_", "BILLING_"))
    }
    env |= {
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": client.namespace,
        "BILLING_TASK_QUEUE": task_queue,
        "BILLING_DATABASE_URL": topology_database_url,
        "BILLING_DATA_DIR": str(tmp_path / "data"),
    }
    workers = WorkerProcesses(env, tmp_path)
    started = asyncio.get_running_loop().time()
    try:
        workers.start(WORKERS)
        await wait_for_pollers(client, task_queue, {workers.identity(i) for i in range(WORKERS)})

        async def launch(index: int, grace: int) -> WorkflowHandle[Any, Any]:
            return await start_period(
                client,
                BillingPeriodInput(
                    subscription_external_id=f"sub_{index}",
                    period_start=JANUARY[0],
                    period_end=JANUARY[1],
                    grace_period_seconds=grace,
                    refresh_debounce_seconds=0,
                    webhook_retry_window_seconds=120,
                ),
                task_queue=task_queue,
            )

        # Periods that are inside their grace timer (cached on every worker) at the kill.
        before = [await launch(i, 2) for i in range(PERIODS_BEFORE_KILL)]
        for handle in before:
            await _wait_for_draft(handle)
        killed = workers.identity(0)
        workers.processes[0].send_signal(signal.SIGKILL)
        workers.processes[0].wait(timeout=10)

        after = [
            await launch(i, i % 3)
            for i in range(PERIODS_BEFORE_KILL, PERIODS_BEFORE_KILL + PERIODS_AFTER_KILL)
        ]
        handles = before + after
        remaining = DEADLINE_SECONDS - (asyncio.get_running_loop().time() - started)
        async with asyncio.timeout(remaining):
            results = await asyncio.gather(*(handle.result() for handle in handles))
            await sink.wait_for(len(handles), timeout=remaining)
    except BaseException:
        print(workers.logs())
        raise
    finally:
        workers.stop()

    # Every period completed with its invoice finalized, and the store agrees: one per period.
    assert [r.status for r in results] == [InvoiceStatus.FINALIZED] * len(handles)
    assert all(r.total_amount_cents == PLAN_FEE_CENTS for r in results)
    invoices = list_invoices(engine)
    assert len(invoices) == len(handles)
    assert {i.subscription_external_id for i in invoices} == {
        f"sub_{i}" for i in range(subscriptions)
    }
    assert {i.status for i in invoices} == {InvoiceStatus.FINALIZED}
    assert sorted(i.number for i in invoices) == sorted(r.number for r in results)

    # Gapless numbers per billing entity: 1..N, no duplicates, no holes.
    numbers: dict[str, list[int]] = defaultdict(list)
    for invoice in invoices:
        prefix, _, digits = invoice.number.rpartition("-")
        numbers[prefix].append(int(digits))
    assert set(numbers) == set(ENTITIES.values())
    for prefix, sequences in numbers.items():
        assert sorted(sequences) == list(range(1, len(sequences) + 1)), prefix

    # Every webhook delivered: the log says so and the receiver got each one, verified.
    deliveries = list_deliveries(engine)
    assert {d.invoice_id for d in deliveries} == {i.id for i in invoices}
    assert {d.status for d in deliveries} == {"succeeded"}
    received = sink.accepted
    assert sorted(r.webhook_id or "" for r in received) == sorted(d.id for d in deliveries)
    assert all(r.verified for r in received)

    # The killed worker had taken part, and its periods were finished by the others.
    handed_over = 0
    for handle in before:
        identities = await workflow_task_identities(handle)
        if killed in identities:
            assert identities[-1] != killed
            handed_over += 1
    assert handed_over > 0, "the killed worker never ran a period: the test proved nothing"
    engine.dispose()


async def _wait_for_draft(handle: WorkflowHandle[Any, Any]) -> None:
    from workflows.billing_period import BillingPeriodWorkflow
    from workflows.messages import PeriodPhase

    deadline = asyncio.get_running_loop().time() + 90  # generous: CI machines can be busy
    while True:
        view = await handle.query(BillingPeriodWorkflow.invoice)
        if view.phase == PeriodPhase.DRAFT and view.invoice is not None:
            return
        assert asyncio.get_running_loop().time() < deadline, f"no draft: {view}"
        await asyncio.sleep(0.05)
