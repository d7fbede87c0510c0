"""Running drafts follow a changed grace period: ``billing catalog load`` and
``billing period follow-settings`` against a real dev server, a worker and a database.

Each test has a stack of its own (a fresh SQLite file, task queue and catalog with its own
subscription id), so that changing a grace period re-times only its own drafts. The
customer lives in Asia/Tokyo: the period's workflow id is its local first day
(``billing-period/<sub>/2026-01-01``), which the nudge must find from the stored UTC start.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from billing.models import Invoice, InvoiceStatus
from billing.timeline import TimelineKind
from services.invoices import list_invoices
from services.timeline import invoice_timeline
from starter.client import BillingClient
from store.db import make_engine, upgrade
from tests.e2e.conftest import Stack, cli_env
from tests.fixtures.periods import running_stack

pytestmark = pytest.mark.e2e

START = "2026-01-01"
ACTOR = "e2e-operator"


def catalog(
    webhook_url: str, sub: str, *, entity_days: int = 3, customer_days: int | None = None
) -> dict[str, Any]:
    customer: dict[str, Any] = {
        "external_id": f"cust_{sub}",
        "billing_entity_code": "follow",
        "name": "Follow K.K.",
        "timezone": "Asia/Tokyo",
    }
    if customer_days is not None:
        customer["grace_period_days"] = customer_days
    return {
        "billing_entities": [
            {
                "code": "follow",
                "name": "Follow",
                "currency": "USD",
                "timezone": "UTC",
                "grace_period_days": entity_days,
                "invoice_prefix": "FOL",
            }
        ],
        "customers": [customer],
        "plans": [{"code": "flat", "name": "Flat", "amount_cents": 1000}],
        "subscriptions": [
            {
                "external_id": sub,
                "customer_external_id": f"cust_{sub}",
                "plan_code": "flat",
                "started_at": "2025-06-01T00:00:00Z",
            }
        ],
        "webhook_endpoints": [{"code": "sink", "url": webhook_url, "secret": "whsec_follow"}],
    }


@dataclass
class Follow:
    stack: Stack
    sub: str
    tmp: Path

    @property
    def workflow_id(self) -> str:
        return f"billing-period/{self.sub}/{START}"

    def invoice(self) -> Invoice | None:
        found = list_invoices(self.stack.engine, subscription_external_id=self.sub)
        return found[0] if found else None

    async def wait_for(self, predicate: Any, timeout: float = 30.0) -> Invoice:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            invoice = await asyncio.to_thread(self.invoice)
            if invoice is not None and predicate(invoice):
                return invoice
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"condition not reached; last invoice: {invoice}")
            await asyncio.sleep(0.1)

    async def start_draft(self) -> Invoice:
        """The January period (already over): drafted at once, in its 3-day grace period."""
        await self.stack.ok("period", "start", self.sub, "--period-start", START, "--json")
        return await self.wait_for(
            lambda i: i.status == InvoiceStatus.DRAFT and i.expected_finalization_at is not None
        )

    def catalog_file(self, **days: Any) -> str:
        path = self.tmp / f"catalog-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump(catalog(self.stack.sink.url, self.sub, **days)))
        return str(path)

    def kinds(self, invoice_id: str) -> list[TimelineKind]:
        return [e.kind for e in invoice_timeline(self.stack.engine, invoice_id)]


@pytest_asyncio.fixture
async def follow(dev_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Follow]:
    sub = f"sub_follow_{uuid.uuid4().hex[:8]}"
    database_url = f"sqlite:///{tmp_path / 'billing.db'}"
    await asyncio.to_thread(upgrade, database_url)
    engine = make_engine(database_url)
    task_queue = f"follow-{uuid.uuid4()}"
    env = cli_env(dev_env, database_url, task_queue, BILLING_ACTOR=ACTOR)
    try:
        async with running_stack(
            dev_env.client,
            engine,
            lambda url: catalog(url, sub),
            task_queue=task_queue,
            threads=16,
        ) as sink:
            here = Follow(Stack(dev_env.client, engine, sink, env, task_queue), sub, tmp_path)
            try:
                yield here
            finally:
                handle = dev_env.client.get_workflow_handle(here.workflow_id)
                try:
                    if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                        await handle.terminate("test finished")
                except Exception:
                    pass
    finally:
        engine.dispose()


def drafted_at(invoice: Invoice) -> datetime:
    """The grace period's start: the deadline minus the 3 days it was drafted with."""
    assert invoice.expected_finalization_at is not None
    return invoice.expected_finalization_at - timedelta(days=3)


async def test_catalog_load_moves_a_running_draft_then_finalizes_it_at_zero_days(
    follow: Follow,
) -> None:
    draft = await follow.start_draft()
    start = drafted_at(draft)

    loaded = await follow.stack.ok("catalog", "load", follow.catalog_file(entity_days=1))
    assert "grace periods: 1 running draft nudged" in loaded.stdout

    moved = await follow.wait_for(lambda i: i.expected_finalization_at == start + timedelta(days=1))
    assert moved.status == InvoiceStatus.DRAFT
    shown = (
        await follow.stack.ok("invoice", "show", follow.sub, "--period-start", START, "--json")
    ).json()
    assert datetime.fromisoformat(shown["expected_finalization_at"]) == start + timedelta(days=1)
    [changed] = [
        e
        for e in invoice_timeline(follow.stack.engine, draft.id)
        if e.kind == TimelineKind.GRACE_PERIOD_CHANGED
    ]
    assert changed.actor == ACTOR  # BILLING_ACTOR, the CLI's default --requested-by
    assert "1 days" in changed.summary

    # Lengthening works the same way; the customer's own setting wins over the entity's.
    await follow.stack.ok("catalog", "load", follow.catalog_file(entity_days=1, customer_days=7))
    await follow.wait_for(lambda i: i.expected_finalization_at == start + timedelta(days=7))

    # 0 days: the deadline is in the past, so the invoice is finalized at once.
    await follow.stack.ok("catalog", "load", follow.catalog_file(customer_days=0))
    final = await follow.wait_for(lambda i: i.status == InvoiceStatus.FINALIZED)
    assert final.expected_finalization_at is None
    result = await follow.stack.client.get_workflow_handle(follow.workflow_id).result()
    assert result["status"] == "finalized"
    kinds = follow.kinds(draft.id)
    assert kinds.count(TimelineKind.GRACE_PERIOD_CHANGED) == 3
    assert kinds.count(TimelineKind.FINALIZED) == 1


async def test_no_follow_leaves_the_draft_and_follow_settings_nudges_it_once(
    follow: Follow,
) -> None:
    draft = await follow.start_draft()
    deadline = draft.expected_finalization_at

    loaded = await follow.stack.ok(
        "catalog", "load", follow.catalog_file(entity_days=2), "--no-follow"
    )
    assert "not nudged (--no-follow)" in loaded.stdout
    await asyncio.sleep(2)
    left = follow.invoice()
    assert left is not None and left.expected_finalization_at == deadline
    assert TimelineKind.GRACE_PERIOD_CHANGED not in follow.kinds(draft.id)

    first = (
        await follow.stack.ok(
            "period", "follow-settings", "--json", "--requested-by", "alice", "--wait", "30"
        )
    ).json()
    assert first["drafts"] == 1 and first["nudged"] == 1
    assert first["missing"] == [] and first["failed"] == [] and first["unmoved"] == []
    moved = follow.invoice()
    assert moved is not None and moved.expected_finalization_at == drafted_at(draft) + timedelta(
        days=2
    )

    second = (await follow.stack.ok("period", "follow-settings", "--json")).json()
    assert second["drafts"] == 0 and second["nudged"] == 0
    entries = invoice_timeline(follow.stack.engine, draft.id)
    changed = [e for e in entries if e.kind == TimelineKind.GRACE_PERIOD_CHANGED]
    assert [e.actor for e in changed] == ["alice"]
    text = await follow.stack.ok("period", "follow-settings")
    assert "0 running drafts nudged" in text.stdout

    schemas = (await follow.stack.ok("schema")).json()  # the signal's payload, for senders
    assert "requested_by" in schemas["RecomputeGracePeriod"]["properties"]


async def test_catalog_load_without_temporal_loads_and_says_how_to_nudge_later(
    follow: Follow,
) -> None:
    draft = await follow.start_draft()
    unreachable = {**follow.stack.env, "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    down = Stack(follow.stack.client, follow.stack.engine, follow.stack.sink, unreachable, "")
    # A load that changes no grace period needs no Temporal at all.
    same = await down.ok("catalog", "load", follow.catalog_file(entity_days=3))
    assert "grace periods: no running draft to re-time" in same.stdout

    result = await down.billing("catalog", "load", follow.catalog_file(entity_days=1))
    assert result.code == 1, result
    assert "loaded" in result.stdout  # the catalog is in the store
    assert "1 running draft(s) still follow the old grace period" in result.stderr
    assert "billing period follow-settings" in result.stderr
    assert "Traceback" not in result.stderr
    # Credits given meanwhile are stored; the running draft's refresh waits for later.
    topped = await down.ok("wallet", "top-up", f"cust_{follow.sub}", "--amount-cents", "100")
    assert "balance" in topped.stdout and "running drafts not refreshed" in topped.stdout

    # Temporal back: the drafts are nudged later, the catalog as loaded then.
    report = (await follow.stack.ok("period", "follow-settings", "--json", "--wait", "30")).json()
    assert report["nudged"] == 1 and report["unmoved"] == []
    moved = follow.invoice()
    assert moved is not None
    assert moved.expected_finalization_at == drafted_at(draft) + timedelta(days=1)


async def test_a_draft_whose_workflow_is_gone_is_reported_not_fatal(follow: Follow) -> None:
    await follow.start_draft()
    await follow.stack.client.get_workflow_handle(follow.workflow_id).terminate("gone")

    loaded = await follow.stack.ok("catalog", "load", follow.catalog_file(entity_days=1))
    assert "1 with no running workflow" in loaded.stdout
    assert follow.workflow_id in loaded.stdout
    report = (await follow.stack.ok("period", "follow-settings", "--json")).json()
    assert report["nudged"] == 0 and report["failed"] == []
    [gone] = report["missing"]
    assert gone["workflow_id"] == follow.workflow_id
    assert "no running workflow" in gone["reason"]

    # The same through the Python client.
    billing = BillingClient(follow.stack.client, follow.stack.engine, task_queue="unused")
    again = await billing.follow_settings(requested_by="billing-system")
    assert again.nudged == 0 and [m.workflow_id for m in again.missing] == [follow.workflow_id]
