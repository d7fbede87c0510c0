"""Operator helpers for webhook deliveries (``billing webhook retry ID``).

Usage::

    client = await config.temporal.connect()
    result = await retry_delivery(client, engine, "dlv_...", task_queue=settings.task_queue)
    print(result.status, result.attempts, result.last_http_status)
"""

from __future__ import annotations

import sqlalchemy
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from activities.webhooks import DeliveryResult
from services import webhooks as delivery_log
from workflows.webhook_delivery import (
    DEFAULT_RETRY_WINDOW,
    WebhookDeliveryInput,
    WebhookDeliveryWorkflow,
    webhook_delivery_workflow_id,
)

__all__ = ["retry_delivery"]


async def retry_delivery(
    client: Client,
    engine: sqlalchemy.Engine,
    delivery_id: str,
    *,
    task_queue: str,
    retry_window_seconds: int = int(DEFAULT_RETRY_WINDOW.total_seconds()),
) -> DeliveryResult:
    """Reset a (failed) delivery to pending and deliver it again; wait for the outcome.

    The delivery is reset with ``services.webhooks.reset_for_retry`` (raises
    ``billing.errors.NotFound`` for an unknown id), then a
    :class:`~workflows.webhook_delivery.WebhookDeliveryWorkflow` runs with the ID
    ``webhook-delivery/<delivery id>/<n>``, ``n`` being the number of attempts logged
    before this retry, so each operator retry is its own workflow in the UI. Two operators
    retrying at once share the same running workflow.
    """
    before = delivery_log.get_delivery(engine, delivery_id)
    delivery_log.reset_for_retry(engine, delivery_id)
    handle = await client.start_workflow(
        WebhookDeliveryWorkflow.run,
        WebhookDeliveryInput(delivery_id=delivery_id, retry_window_seconds=retry_window_seconds),
        id=webhook_delivery_workflow_id(delivery_id, before.attempts),
        task_queue=task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    return await handle.result()
