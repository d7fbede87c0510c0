"""The one way to start a billing period's workflow, and its conflict policy.

A period's workflow id is its business key (:func:`billing.periods.period_workflow_id`):
``billing-period/<subscription>/<first local day>``. Every start goes through the options
built here, whoever asks: ``BillingClient.start_period`` (``billing period start`` and
``start-all``) and usage routing's update-with-start (``BillingClient.send_usage``).

The policy:

- a second start of a running period returns the running workflow (``USE_EXISTING``);
- a period whose workflow completed is never billed twice: starting it again raises
  ``WorkflowAlreadyStartedError`` (``ALLOW_DUPLICATE_FAILED_ONLY``);
- a period whose workflow failed, timed out or was terminated may run again.

The launcher workflow (:mod:`workflows.launch_periods`) starts periods as children with
the same id, reuse policy and search attributes; a child start has no conflict policy, so there a running
period raises ``WorkflowAlreadyStartedError`` too and is reported as already running.
"""

from __future__ import annotations

import logging
from typing import Any

from google.protobuf.field_mask_pb2 import FieldMask
from temporalio.api.common.v1 import Priority as PriorityMessage
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflow.v1 import WorkflowExecutionOptions
from temporalio.api.workflowservice.v1 import UpdateWorkflowExecutionOptionsRequest
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from billing.models import Invoice
from billing.periods import describe_period, period_workflow_id
from workflows import search_attributes
from workflows.billing_period import BillingPeriodWorkflow
from workflows.commands import EDIT_PRIORITY_KEY
from workflows.messages import BillingPeriodInput

__all__ = [
    "ID_CONFLICT_POLICY",
    "ID_REUSE_POLICY",
    "give_operator_priority",
    "period_summary",
    "period_workflow_id",
    "signal_running_period",
    "start_period",
    "start_period_operation",
    "was_started",
]

ID_CONFLICT_POLICY = WorkflowIDConflictPolicy.USE_EXISTING
ID_REUSE_POLICY = WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY

log = logging.getLogger("billing.starter")


def period_summary(period: BillingPeriodInput, timezone: str = "UTC") -> str:
    """The workflow's summary in the UI: ``Billing period 2026-01-01..2026-01-31 of sub_1``."""
    label = describe_period(period.period_start, period.period_end, timezone)
    return f"Billing period {label} of {period.subscription_external_id}"


def _start_options(period: BillingPeriodInput, task_queue: str, timezone: str) -> dict[str, Any]:
    return {
        "id": period_workflow_id(period.subscription_external_id, period.period_start, timezone),
        "task_queue": task_queue,
        "id_conflict_policy": ID_CONFLICT_POLICY,
        "id_reuse_policy": ID_REUSE_POLICY,
        "static_summary": period_summary(period, timezone),
        # What never changes is given here; the workflow upserts only what changes.
        "search_attributes": search_attributes.at_start(period),
    }


async def start_period(
    client: Client, period: BillingPeriodInput, *, task_queue: str, timezone: str = "UTC"
) -> WorkflowHandle[BillingPeriodWorkflow, Invoice]:
    """Start the period's workflow, or return the running one (see the module doc).

    Raises ``WorkflowAlreadyStartedError`` when the period's workflow has completed.
    :func:`was_started` tells a new start from a running period.
    """
    return await client.start_workflow(
        BillingPeriodWorkflow.run, period, **_start_options(period, task_queue, timezone)
    )


def start_period_operation(
    period: BillingPeriodInput, *, task_queue: str, timezone: str = "UTC"
) -> WithStartWorkflowOperation[BillingPeriodWorkflow, Invoice]:
    """The same start, for update-with-start (usage routing)."""
    return WithStartWorkflowOperation(
        BillingPeriodWorkflow.run, period, **_start_options(period, task_queue, timezone)
    )


def was_started(handle: WorkflowHandle[Any, Any]) -> bool:
    """True when :func:`start_period` started a new run, False when one was running.

    The server says so in its start response (``started``); the SDK keeps that response
    on the handle without a public accessor.
    """
    response = getattr(handle, "_start_workflow_response", None)
    return bool(getattr(response, "started", True))


async def give_operator_priority(client: Client, workflow_id: str) -> None:
    """Put the period's tasks ahead of any backlog while an operator works on it.

    An operator's edit runs as the period's workflow tasks and activities; during a
    month-end close they would queue behind thousands of other periods' tasks. This sets
    the running workflow's task priority to ``EDIT_PRIORITY_KEY`` (Temporal's
    ``UpdateWorkflowExecutionOptions``): from then on its workflow tasks, on the sticky
    queue too, and its store activities are handed to workers first. The server records
    one ``WorkflowExecutionOptionsUpdated`` event the first time and nothing when the
    priority is already set, so every operator request asks for it. It does not change
    what the workflow does (its commands), so it needs no patch.

    Failures are left to the request that follows (a period that does not exist is
    reported by it); a server without priorities just queues the tasks in order.
    """
    try:
        await client.workflow_service.update_workflow_execution_options(
            UpdateWorkflowExecutionOptionsRequest(
                namespace=client.namespace,
                workflow_execution=WorkflowExecution(workflow_id=workflow_id),
                workflow_execution_options=WorkflowExecutionOptions(
                    priority=PriorityMessage(priority_key=EDIT_PRIORITY_KEY)
                ),
                update_mask=FieldMask(paths=["priority"]),
            )
        )
    except RPCError as err:
        log.debug("operator priority not set on %s: %s", workflow_id, err.message)


async def signal_running_period(
    client: Client, workflow_id: str, signal: Any, message: Any
) -> str | None:
    """Send ``signal`` to the period's workflow: None once sent, else the server's word
    that it is gone (completed, or never started), which a nudge of many periods reports
    instead of failing. Other server errors are raised."""
    handle = client.get_workflow_handle_for(BillingPeriodWorkflow.run, workflow_id)
    try:
        await handle.signal(signal, message)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return err.message
        raise
    return None
