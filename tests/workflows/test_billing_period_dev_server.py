"""A whole billing period on the real dev server, found again by operators' list queries."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from functools import partial

import pytest
import sqlalchemy
from temporalio.testing import WorkflowEnvironment

from billing.models import InvoiceStatus
from starter.periods import start_period
from tests.fixtures.periods import period_catalog, running_stack
from workflows.messages import BillingPeriodInput
from workflows.search_attributes import INVOICE_NUMBER

pytestmark = pytest.mark.integration


async def test_full_period_is_visible_to_list_queries(
    dev_env: WorkflowEnvironment, engine: sqlalchemy.Engine
) -> None:
    client = dev_env.client
    task_queue = f"dev-{uuid.uuid4()}"
    suffix = f"-{uuid.uuid4().hex[:8]}"
    catalog = partial(period_catalog, suffix=suffix)
    async with running_stack(client, engine, catalog, task_queue=task_queue) as sink:
        handle = await start_period(
            client,
            BillingPeriodInput(
                subscription_external_id=f"sub_pro{suffix}",
                period_start=datetime(2026, 1, 1, tzinfo=UTC),
                period_end=datetime(2026, 2, 1, tzinfo=UTC),
                grace_period_seconds=1,
            ),
            task_queue=task_queue,
        )
        invoice = await asyncio.wait_for(handle.result(), timeout=60)
        assert invoice.status == InvoiceStatus.FINALIZED
        assert len(sink.accepted) == 1

    query = (
        f"BillingSubscription = 'sub_pro{suffix}' AND BillingCustomer = 'cust_inherit' "
        "AND BillingInvoiceStatus = 'finalized' "
        "AND BillingPeriodStart >= '2026-01-01T00:00:00Z' "
        "AND BillingPeriodStart < '2026-01-02T00:00:00Z' AND BillingTotalCents = 10000"
    )
    found: list[str] = []
    for _ in range(100):  # visibility is eventually consistent
        found = [execution.id async for execution in client.list_workflows(query)]
        if found:
            break
        await asyncio.sleep(0.1)
    assert found == [f"billing-period/sub_pro{suffix}/2026-01-01"]
    described = await handle.describe()
    assert described.typed_search_attributes.get(INVOICE_NUMBER) == invoice.number
