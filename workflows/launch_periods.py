"""Launch every billing period that ends on a date: the action of a Temporal Schedule.

``billing schedule create`` (default cron ``0 1 1 * *``, UTC) runs this workflow at the
start of each month. Without an explicit date it launches the periods whose last local
day is the last day of the previous month in UTC (from ``workflow.now()``): at 01:00 UTC
on the 1st that is the month that just ended, for customers west and east of UTC alike,
and a run delayed by a few days still launches the same periods.
Launching a period whose local end is still a few hours away is harmless: the period's
workflow accepts usage until its end, then drafts the invoice.

Design choice: an activity lists the periods (it reads the catalog); the workflow starts
each :class:`BillingPeriodWorkflow` itself as a child with ``ParentClosePolicy.ABANDON``,
the period's business key as id (:func:`billing.periods.period_workflow_id`) and the reuse
policy of every other start (``starter.periods``: a completed period is never billed
twice). So launches are deterministic, visible as children in the UI, and idempotent: a
period already running (started by ``billing period start-all`` or by usage) or done is
reported, not started twice.
"""

from __future__ import annotations

from datetime import date, timedelta

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.launcher import LauncherActivities, PeriodsEndingRequest, PeriodToLaunch
    from workflows import search_attributes
    from workflows.billing_period import BillingPeriodWorkflow
    from workflows.messages import BillingPeriodInput

__all__ = ["LaunchPeriodsInput", "LaunchPeriodsResult", "LaunchPeriodsWorkflow"]

LIST_TIMEOUT = timedelta(minutes=5)
LIST_RETRY_POLICY = RetryPolicy(maximum_interval=timedelta(seconds=30))


class LaunchPeriodsInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    period_end_date: date | None = None  # default: last day of the previous month (UTC)
    grace_period_seconds: int | None = Field(default=None, ge=0)


class LaunchPeriodsResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    period_end_date: date
    started: list[str] = Field(default_factory=list)
    already_running: list[str] = Field(default_factory=list)


@workflow.defn
class LaunchPeriodsWorkflow:
    @workflow.run
    async def run(self, input: LaunchPeriodsInput) -> LaunchPeriodsResult:
        day = input.period_end_date or (workflow.now().date().replace(day=1) - timedelta(days=1))
        periods: list[PeriodToLaunch] = await workflow.execute_activity_method(
            LauncherActivities.list_periods_ending,
            PeriodsEndingRequest(period_end_date=day),
            start_to_close_timeout=LIST_TIMEOUT,
            retry_policy=LIST_RETRY_POLICY,
            summary=f"list periods ending {day.isoformat()}",
        )
        started: list[str] = []
        running: list[str] = []
        for period in periods:
            child_input = BillingPeriodInput(
                subscription_external_id=period.subscription_external_id,
                customer_external_id=period.customer_external_id,
                period_start=period.period_start,
                period_end=period.period_end,
                grace_period_seconds=input.grace_period_seconds,
            )
            try:
                await workflow.start_child_workflow(
                    BillingPeriodWorkflow.run,
                    child_input,
                    id=period.workflow_id,
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                    search_attributes=search_attributes.at_start(child_input),
                    static_summary=(
                        f"Billing period {period.label} of {period.subscription_external_id}"
                    ),
                )
                started.append(period.workflow_id)
            except WorkflowAlreadyStartedError:
                running.append(period.workflow_id)
        workflow.set_current_details(
            f"periods ending {day.isoformat()}: {len(started)} started, "
            f"{len(running)} already running or done"
        )
        return LaunchPeriodsResult(period_end_date=day, started=started, already_running=running)
