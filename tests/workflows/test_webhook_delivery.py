"""WebhookDeliveryWorkflow on the time-skipping server: real activities, real HTTP to a
local sink, real database. Backoff timers skip; the HTTP requests are real."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
import sqlalchemy
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.webhooks import DeliveryResult, WebhookActivities
from services.webhooks import get_delivery, list_deliveries
from starter.webhook_sink import WebhookSink
from starter.webhooks import retry_delivery
from tests.activities.webhook_support import SECRET, finalized_delivery
from workflows.webhook_delivery import (
    WebhookDeliveryInput,
    WebhookDeliveryWorkflow,
    webhook_delivery_workflow_id,
)


@pytest_asyncio.fixture
async def sink() -> AsyncIterator[WebhookSink]:
    receiver = WebhookSink(secret=SECRET)
    await receiver.start("127.0.0.1", 0)
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest_asyncio.fixture
async def worker(
    temporal_env: WorkflowEnvironment, engine: sqlalchemy.Engine, task_queue: str
) -> AsyncIterator[Worker]:
    async with httpx.AsyncClient() as http:
        activities = WebhookActivities(engine, http)
        async with Worker(
            temporal_env.client,
            task_queue=task_queue,
            workflows=[WebhookDeliveryWorkflow],
            activities=[activities.deliver_webhook],
        ) as running:
            yield running


async def _deliver(
    env: WorkflowEnvironment, task_queue: str, delivery_id: str, window_seconds: int
) -> DeliveryResult:
    return await env.client.execute_workflow(
        WebhookDeliveryWorkflow.run,
        WebhookDeliveryInput(delivery_id=delivery_id, retry_window_seconds=window_seconds),
        id=webhook_delivery_workflow_id(delivery_id, 0) + f"-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )


async def test_receiver_recovers_after_three_failures(
    temporal_env: WorkflowEnvironment,
    engine: sqlalchemy.Engine,
    sink: WebhookSink,
    worker: Worker,
    task_queue: str,
) -> None:
    delivery_id = finalized_delivery(engine, sink.url)
    sink.fail_next(3, status=500)

    result = await _deliver(temporal_env, task_queue, delivery_id, 3600)

    assert (result.status, result.attempts, result.last_http_status) == ("succeeded", 4, 200)
    delivery = get_delivery(engine, delivery_id)
    assert (delivery.status, delivery.attempts, delivery.last_http_status) == ("succeeded", 4, 200)
    received = sink.for_webhook(delivery_id)
    assert [r.response_status for r in received] == [500, 500, 500, 200]
    assert all(r.verified for r in received)
    assert len(sink.accepted) == 1


async def test_receiver_down_fails_after_the_window_then_operator_retry_succeeds(
    temporal_env: WorkflowEnvironment,
    engine: sqlalchemy.Engine,
    sink: WebhookSink,
    worker: Worker,
    task_queue: str,
) -> None:
    delivery_id = finalized_delivery(engine, sink.url)
    sink.respond_with(503)

    # Backoff 1, 2, 4, ... 256 s: attempt 10 starts at 511 s; the next would start at
    # 811 s, after the 600 s window, so attempt 10 is the last one.
    result = await _deliver(temporal_env, task_queue, delivery_id, 600)

    assert (result.status, result.attempts, result.last_http_status) == ("failed", 10, 503)
    assert [d.id for d in list_deliveries(engine, status="failed")] == [delivery_id]
    assert len(sink.for_webhook(delivery_id)) == 10

    sink.respond_with(200)
    retried = await retry_delivery(temporal_env.client, engine, delivery_id, task_queue=task_queue)

    assert retried.status == "succeeded"
    assert retried.last_http_status == 200
    assert get_delivery(engine, delivery_id).status == "succeeded"
    assert list_deliveries(engine, status="failed") == []
    received = sink.for_webhook(delivery_id)
    assert len(received) == 11
    assert received[-1].verified
    assert [r.webhook_id for r in sink.accepted] == [delivery_id]


async def test_unknown_delivery_fails_the_workflow(
    temporal_env: WorkflowEnvironment, worker: Worker, task_queue: str
) -> None:
    with pytest.raises(WorkflowFailureError) as caught:
        await _deliver(temporal_env, task_queue, "no-such-delivery", 600)
    assert isinstance(caught.value.cause, ApplicationError)
    assert caught.value.cause.type == "NotFound"
