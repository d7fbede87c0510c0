"""Launching billing periods: the business-key workflow id and an idempotent start."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from billing.models import Invoice
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import BillingPeriodInput

__all__ = ["period_workflow_id", "start_period"]


def period_workflow_id(
    subscription_external_id: str, period_start: datetime, timezone: str = "UTC"
) -> str:
    """``billing-period/<subscription external id>/<period start date>``.

    The date is the period's first day in the customer's timezone (the day on the invoice).
    """
    local_start = period_start.astimezone(ZoneInfo(timezone))
    return f"billing-period/{subscription_external_id}/{local_start.date().isoformat()}"


async def start_period(
    client: Client,
    period: BillingPeriodInput,
    *,
    task_queue: str,
    timezone: str = "UTC",
    period_label: str | None = None,
) -> WorkflowHandle[BillingPeriodWorkflow, Invoice]:
    """Start the period's workflow, or return the running one (a second launch does nothing)."""
    label = period_label or (
        f"{period.period_start.date().isoformat()}..{period.period_end.date().isoformat()}"
    )
    return await client.start_workflow(
        BillingPeriodWorkflow.run,
        period,
        id=period_workflow_id(period.subscription_external_id, period.period_start, timezone),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        # A period that completed is never billed twice; a failed or terminated one may rerun.
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        static_summary=f"Billing period {label} of {period.subscription_external_id}",
    )
