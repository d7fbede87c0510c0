"""Shared set-up for billing-period workflow tests: a catalog, a worker, a webhook sink."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest_asyncio
import sqlalchemy
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from billing.models import Invoice, UsageEvent
from services.catalog import load_catalog
from starter.periods import start_period
from starter.webhook_sink import WebhookSink
from worker import build_worker
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import BillingPeriodInput, PeriodPhase, PeriodView

SECRET = "whsec_workflow_tests"
JANUARY = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))


def period_catalog(webhook_url: str, suffix: str = "") -> dict[str, Any]:
    """Two billing entities (empty invoices finalized / skipped) and one subscription per case.

    ``suffix`` makes subscription ids (and so workflow ids) unique per test: the Temporal
    test server lives for the whole session.
    """
    usage_charges = [
        {
            "billable_metric_code": "api_calls",
            "charge_model": "standard",
            "properties": {"amount": "0.01"},
        },
        {
            "billable_metric_code": "storage_gb",
            "charge_model": "graduated",
            "properties": {
                "graduated_ranges": [
                    {"from_value": 0, "to_value": 10, "per_unit_amount": "2", "flat_amount": "0"},
                    {
                        "from_value": 10,
                        "to_value": None,
                        "per_unit_amount": "1",
                        "flat_amount": "0",
                    },
                ]
            },
        },
        {
            "billable_metric_code": "seats",
            "charge_model": "standard",
            "properties": {"amount": "5"},
        },
    ]
    return {
        "billing_entities": [
            {
                "code": "acme",
                "name": "Acme",
                "currency": "USD",
                "timezone": "UTC",
                "grace_period_days": 3,
                "invoice_prefix": "ACME",
            },
            {
                "code": "strict",
                "name": "Strict",
                "currency": "USD",
                "timezone": "UTC",
                "grace_period_days": 3,
                "invoice_prefix": "STR",
                "finalize_zero_amount_invoice": False,
            },
        ],
        "customers": [
            {"external_id": "cust_inherit", "billing_entity_code": "acme", "name": "Inherit Ltd"},
            {
                "external_id": "cust_skip",
                "billing_entity_code": "acme",
                "name": "Skip Ltd",
                "finalize_zero_amount_invoice": "skip",
            },
            {"external_id": "cust_strict", "billing_entity_code": "strict", "name": "Strict Ltd"},
            {
                "external_id": "cust_finalize",
                "billing_entity_code": "strict",
                "name": "Finalize Ltd",
                "finalize_zero_amount_invoice": "finalize",
            },
        ],
        "billable_metrics": [
            {"code": "api_calls", "name": "API calls", "aggregation_type": "count"},
            {
                "code": "storage_gb",
                "name": "Storage",
                "aggregation_type": "sum",
                "field_name": "gb",
            },
            {"code": "seats", "name": "Seats", "aggregation_type": "max", "field_name": "seats"},
        ],
        "plans": [
            {"code": "pro", "name": "Pro", "amount_cents": 10000, "charges": usage_charges},
            {"code": "metered", "name": "Metered", "amount_cents": 0, "charges": usage_charges},
        ],
        "subscriptions": [
            {
                "external_id": "sub_pro" + suffix,
                "customer_external_id": "cust_inherit",
                "plan_code": "pro",
                "started_at": "2025-06-01T00:00:00Z",
            },
            {
                "external_id": "sub_skip" + suffix,
                "customer_external_id": "cust_skip",
                "plan_code": "metered",
                "started_at": "2025-06-01T00:00:00Z",
            },
            {
                "external_id": "sub_skip_paid" + suffix,
                "customer_external_id": "cust_skip",
                "plan_code": "pro",
                "started_at": "2025-06-01T00:00:00Z",
            },
            {
                "external_id": "sub_inherit_true" + suffix,
                "customer_external_id": "cust_inherit",
                "plan_code": "metered",
                "started_at": "2025-06-01T00:00:00Z",
            },
            {
                "external_id": "sub_inherit_false" + suffix,
                "customer_external_id": "cust_strict",
                "plan_code": "metered",
                "started_at": "2025-06-01T00:00:00Z",
            },
            {
                "external_id": "sub_finalize" + suffix,
                "customer_external_id": "cust_finalize",
                "plan_code": "metered",
                "started_at": "2025-06-01T00:00:00Z",
            },
        ],
        "coupons": [
            {
                "code": "welcome",
                "name": "Welcome",
                "coupon_type": "fixed_amount",
                "amount_cents": 2500,
                "frequency": "once",
            },
            {
                "code": "everything",
                "name": "Everything",
                "coupon_type": "percentage",
                "percentage_rate": "100",
                "frequency": "once",
            },
        ],
        "wallets": [{"customer_external_id": "cust_inherit", "initial_balance_cents": 0}],
        "webhook_endpoints": [{"code": "sink", "url": webhook_url, "secret": SECRET}],
    }


test_catalog = period_catalog  # the name some scripts import; not a test


@dataclass
class PeriodHarness:
    """A running worker over a loaded catalog, and helpers to drive periods."""

    env: WorkflowEnvironment
    engine: sqlalchemy.Engine
    sink: WebhookSink
    task_queue: str
    suffix: str = ""
    started: list[str] = field(default_factory=list)

    def sub(self, name: str) -> str:
        """The test's own id of a catalog subscription (``sub_pro`` -> ``sub_pro-1a2b``)."""
        return name + self.suffix

    def event(
        self, tx: str, code: str, when: datetime, sub: str = "sub_pro", **props: Any
    ) -> UsageEvent:
        return UsageEvent(
            transaction_id=tx,
            external_subscription_id=self.sub(sub),
            code=code,
            timestamp=when,
            properties=props,
        )

    @property
    def client(self) -> Client:
        return self.env.client

    async def start(
        self,
        subscription: str,
        period: tuple[datetime, datetime] = JANUARY,
        **overrides: Any,
    ) -> WorkflowHandle[BillingPeriodWorkflow, Invoice]:
        overrides.setdefault("webhook_retry_window_seconds", 600)
        overrides.setdefault("refresh_debounce_seconds", 0)
        handle = await start_period(
            self.client,
            BillingPeriodInput(
                subscription_external_id=self.sub(subscription),
                period_start=period[0],
                period_end=period[1],
                **overrides,
            ),
            task_queue=self.task_queue,
        )
        self.started.append(handle.id)
        return handle

    async def stop_leftovers(self) -> None:
        """Terminate this test's periods that still run: the test server is shared."""
        for workflow_id in self.started:
            handle = self.client.get_workflow_handle(workflow_id)
            with contextlib.suppress(RPCError):
                if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                    await handle.terminate("test finished")

    def latest(self, handle: WorkflowHandle[Any, Any]) -> WorkflowHandle[Any, Any]:
        """A plain handle on the latest run (handles from ``start_workflow`` also let the
        test server skip time while waiting for the result)."""
        return self.client.get_workflow_handle_for(BillingPeriodWorkflow.run, handle.id)

    async def view(self, handle: WorkflowHandle[Any, Any]) -> PeriodView:
        view: PeriodView = await handle.query(BillingPeriodWorkflow.invoice)
        return view

    async def wait_for(
        self,
        handle: WorkflowHandle[Any, Any],
        predicate: Callable[[PeriodView], bool],
        timeout: float = 30.0,
    ) -> PeriodView:
        deadline = asyncio.get_running_loop().time() + timeout
        view: PeriodView | None = None
        while True:
            try:
                view = await asyncio.wait_for(self.view(handle), timeout=5)
            except (RPCError, TimeoutError):
                view = None  # a query racing a continue-as-new handover: ask again
            if view is not None and predicate(view):
                return view
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"condition not reached; last view: {view}")
            await asyncio.sleep(0.05)

    async def wait_for_draft(self, handle: WorkflowHandle[Any, Any]) -> PeriodView:
        return await self.wait_for(
            handle, lambda v: v.phase == PeriodPhase.DRAFT and v.invoice is not None
        )


async def workflow_task_failures(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """Workflow task failures in the history: a malformed input must never cause one."""
    failures = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            failures.append(str(event.workflow_task_failed_event_attributes.failure.message))
    return failures


@pytest_asyncio.fixture
async def harness(
    temporal_env: WorkflowEnvironment, engine: sqlalchemy.Engine
) -> AsyncIterator[PeriodHarness]:
    from concurrent.futures import ThreadPoolExecutor

    task_queue = f"periods-{uuid.uuid4()}"
    suffix = f"-{uuid.uuid4().hex[:8]}"
    sink = WebhookSink(secret=SECRET)
    await sink.start("127.0.0.1", 0)
    load_catalog(engine, period_catalog(sink.url, suffix))
    try:
        with ThreadPoolExecutor(max_workers=8) as executor:
            async with httpx.AsyncClient() as http:
                worker = build_worker(
                    temporal_env.client, engine, http, task_queue=task_queue, executor=executor
                )
                async with worker:
                    harness = PeriodHarness(temporal_env, engine, sink, task_queue, suffix)
                    yield harness
                    await harness.stop_leftovers()
    finally:
        await sink.stop()
