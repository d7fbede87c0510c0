"""Webhook receiver faults on the time-skipping server: the receiver is down (connection
refused) for a while, then up but misbehaving (5xx, 4xx, a hang past the HTTP timeout,
garbage bytes). Every delivery ends succeeded with its attempts logged, the receiver accepts
each unique webhook id exactly once, and no invoice is finalized twice."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.webhooks import WEBHOOK_HTTP_TIMEOUT
from billing.models import InvoiceStatus
from services.invoices import list_invoices
from services.webhooks import list_deliveries
from tests.fixtures.periods import workflow_task_failures
from tests.reliability.support import counts, module_harness, until
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import FinalizeInvoice

pytestmark = [pytest.mark.fault]

SUBSCRIPTIONS = ["sub_pro", "sub_skip_paid", "sub_inherit_true", "sub_finalize"]


async def test_receiver_down_then_misbehaving_every_webhook_once(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with module_harness(temporal_env, tmp_path) as harness:
        sink = harness.sink
        port = sink.port
        await sink.stop()  # down: connection refused
        handles = [await harness.start(name) for name in SUBSCRIPTIONS]
        for handle in handles:
            await harness.wait_for_draft(handle)
            await handle.signal(BillingPeriodWorkflow.finalize_invoice, FinalizeInvoice())
        # Each period finalizes and then fails to deliver while the receiver is down.
        await until(
            lambda: asyncio.to_thread(list_deliveries, harness.engine),
            lambda ds: len(ds) == len(SUBSCRIPTIONS) and all(d.attempts >= 1 for d in ds),
            timeout=30,
            what="first failed attempts",
        )
        down = list_deliveries(harness.engine)
        assert {d.status for d in down} <= {"pending", "retrying"}, down
        assert all(d.last_error for d in down), down

        # Up again, misbehaving first: 5xx, 4xx, a hang, garbage; then 200.
        await sink.start("127.0.0.1", port)
        sink.fail_next(2, status=503)
        sink.fail_next(1, status=400)
        sink.delay_next(WEBHOOK_HTTP_TIMEOUT.total_seconds() + 2)
        sink.garbage_next(1)
        results = []
        for handle in handles:  # one at a time: the test server skips time for one waiter
            results.append(await asyncio.wait_for(handle.result(), 120))
        await sink.wait_for(len(SUBSCRIPTIONS), timeout=30)

        assert [r.status for r in results] == [InvoiceStatus.FINALIZED] * len(SUBSCRIPTIONS)
        invoices = list_invoices(harness.engine)
        assert len(invoices) == len(SUBSCRIPTIONS)
        numbers: dict[str, list[int]] = defaultdict(list)
        for invoice in invoices:
            assert invoice.status == InvoiceStatus.FINALIZED
            prefix, _, digits = (invoice.number or "").rpartition("-")
            numbers[prefix].append(int(digits))
        assert {p: sorted(n) for p, n in numbers.items()} == {"ACME": [1, 2, 3], "STR": [1]}
        assert counts(harness.engine)["webhook_deliveries"] == len(SUBSCRIPTIONS)

        deliveries = list_deliveries(harness.engine)
        assert {d.status for d in deliveries} == {"succeeded"}, deliveries
        assert {d.last_http_status for d in deliveries} == {200}
        assert all(d.attempts >= 2 for d in deliveries), [d.attempts for d in deliveries]
        # Down attempts + 5 misbehaving answers were all logged as attempts.
        assert sum(d.attempts for d in deliveries) >= len(deliveries) + 5
        accepted = sorted(r.webhook_id or "" for r in sink.accepted)
        assert accepted == sorted(d.id for d in deliveries)
        assert all(r.verified for r in sink.accepted)
        refused = [r for r in sink.received if not r.accepted]
        assert len(refused) >= 3, refused  # 503, 503, 400 (the hang and garbage may not log)
        for handle in handles:
            assert await workflow_task_failures(handle) == []
