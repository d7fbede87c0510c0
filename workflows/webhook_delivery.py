"""Deliver one webhook with bounded retries: the operator's retry path.

The billing-period workflow calls :meth:`WebhookActivities.deliver_webhook` directly
after a finalization; this workflow wraps the same activity so that an operator can retry
a failed delivery (``billing webhook retry ID``, see :func:`starter.webhooks.retry_delivery`)
with its own workflow ID ``webhook-delivery/<delivery id>/<n>`` in the Temporal UI.

The retry window is fixed when the workflow starts: ``give_up_at = workflow.now() +
retry_window_seconds``. Temporal retries the activity with :data:`WEBHOOK_RETRY_POLICY`;
the activity itself records the final failure and returns a ``failed`` result when the
next retry would fall after ``give_up_at``. Should the activity still fail (e.g. its
schedule-to-close timeout passes while workers are down) the error becomes a ``failed``
result too: a failed webhook is a visible state of the delivery, not a failed workflow.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    WorkflowAlreadyStartedError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ConfigDict

    from activities.webhooks import (
        WEBHOOK_ATTEMPT_TIMEOUT,
        WEBHOOK_RETRY_POLICY,
        WEBHOOK_SCHEDULE_SLACK,
        DeliverWebhookRequest,
        DeliveryResult,
        WebhookActivities,
    )

__all__ = [
    "DEFAULT_RETRY_WINDOW",
    "WebhookDeliveryInput",
    "WebhookDeliveryWorkflow",
    "deliver_in_turn",
    "deliver_webhook",
    "start_deliveries",
    "webhook_delivery_workflow_id",
]

DEFAULT_RETRY_WINDOW = timedelta(hours=1)
"""How long a delivery is retried before it is recorded as failed."""


class WebhookDeliveryInput(BaseModel):
    """Input of :class:`WebhookDeliveryWorkflow`."""

    model_config = ConfigDict(frozen=True)

    delivery_id: str
    retry_window_seconds: int = int(DEFAULT_RETRY_WINDOW.total_seconds())


def webhook_delivery_workflow_id(delivery_id: str, n: int) -> str:
    """``webhook-delivery/<delivery id>/<n>``: the ID of the n-th retry of a delivery."""
    return f"webhook-delivery/{delivery_id}/{n}"


def deliver_webhook(
    delivery_id: str, give_up_at: datetime, window: timedelta
) -> Awaitable[DeliveryResult]:
    """Run the delivery activity, retried with backoff for ``window`` (from a workflow)."""
    return workflow.execute_activity_method(
        WebhookActivities.deliver_webhook,
        DeliverWebhookRequest(delivery_id=delivery_id, give_up_at=give_up_at),
        start_to_close_timeout=WEBHOOK_ATTEMPT_TIMEOUT,
        schedule_to_close_timeout=window + WEBHOOK_SCHEDULE_SLACK,
        retry_policy=WEBHOOK_RETRY_POLICY,
        summary=f"deliver webhook {delivery_id}",
    )


async def deliver_in_turn(
    delivery_ids: list[str], retry_window_seconds: int, counted: Callable[[bool], None]
) -> None:
    """Deliver each webhook in turn (``invoice.created``: the period waits for it), all of
    them within one retry window from now; ``counted(delivered)`` after each."""
    give_up_at = workflow.now() + timedelta(seconds=retry_window_seconds)
    for delivery_id in delivery_ids:
        window = max(give_up_at - workflow.now(), timedelta(seconds=1))
        try:
            result = await deliver_webhook(delivery_id, give_up_at, window)
            delivered = str(result.status) == "succeeded"
        except ActivityError as err:
            # The delivery log says "failed"; an operator can retry it (billing webhook retry).
            workflow.logger.warning("webhook %s not delivered: %s", delivery_id, err.cause)
            delivered = False
        counted(delivered)


async def start_deliveries(
    summary: str, delivery_ids: list[str], retry_window_seconds: int
) -> None:
    """Deliver webhooks in child workflows the caller does not wait for (``invoice.drafted``
    and ``invoice.approval_required``: the period goes on while they are delivered).

    A delivery whose workflow already runs is left to it: a step done again (a period
    started again after it was terminated, a reset, a repeated store step) returns the
    same delivery ids, and their first delivery workflow, abandoned by its parent, may
    still be retrying. The server refuses the second start with the same id; that is not
    a failure of the period.
    """
    for delivery_id in delivery_ids:
        child_id = webhook_delivery_workflow_id(delivery_id, 1)
        try:
            await workflow.start_child_workflow(
                WebhookDeliveryWorkflow.run,
                WebhookDeliveryInput(
                    delivery_id=delivery_id, retry_window_seconds=retry_window_seconds
                ),
                id=child_id,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                static_summary=summary,
            )
        except WorkflowAlreadyStartedError:
            workflow.logger.info("webhook delivery %s already runs: left to it", child_id)


@workflow.defn
class WebhookDeliveryWorkflow:
    """Deliver one webhook (outbox row), retried with backoff inside a bounded window."""

    @workflow.run
    async def run(self, input: WebhookDeliveryInput) -> DeliveryResult:
        if not input.delivery_id or input.retry_window_seconds <= 0:
            raise ApplicationError(
                "a webhook delivery needs a delivery_id and a positive retry_window_seconds, "
                f"got {input.delivery_id!r} and {input.retry_window_seconds}",
                type="InvalidInput",
                non_retryable=True,
            )
        window = timedelta(seconds=input.retry_window_seconds)
        give_up_at = workflow.now() + window
        try:
            return await deliver_webhook(input.delivery_id, give_up_at, window)
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.non_retryable:
                # Unknown delivery id: a permanent error the caller must see.
                raise ApplicationError(cause.message, type=cause.type, non_retryable=True) from err
            reason = (cause.message if isinstance(cause, FailureError) else "") or type(
                cause or err
            ).__name__
            workflow.logger.warning("webhook %s gave up: %s", input.delivery_id, reason)
            return DeliveryResult(
                delivery_id=input.delivery_id,
                status="failed",
                last_error=f"retry window ended: {reason}"[:200],
            )
