"""Temporal Schedules that launch billing periods (``billing schedule create|list|delete``).

A schedule's action starts :class:`~workflows.launch_periods.LaunchPeriodsWorkflow`, which
launches every period ending the day before (UTC). Schedule times are UTC.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)
from temporalio.service import RPCError, RPCStatusCode

from starter.errors import InvalidRequest, Refused
from workflows.launch_periods import LaunchPeriodsInput, LaunchPeriodsWorkflow

__all__ = [
    "DEFAULT_CRON",
    "DEFAULT_SCHEDULE_ID",
    "ScheduleSummary",
    "create_schedule",
    "delete_schedule",
    "list_schedules",
]

DEFAULT_SCHEDULE_ID = "billing-month-end"
DEFAULT_CRON = "0 1 1 * *"
LAUNCH_WORKFLOW_TYPE = "LaunchPeriodsWorkflow"


class ScheduleSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    cron: list[str] = Field(default_factory=list)
    paused: bool = False
    next_runs: list[datetime] = Field(default_factory=list)
    recent_actions: int = 0


def _schedule(
    cron: str, task_queue: str, grace_period_seconds: int | None, schedule_id: str
) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            LaunchPeriodsWorkflow.run,
            LaunchPeriodsInput(grace_period_seconds=grace_period_seconds),
            id=f"launch-periods/{schedule_id}",
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(cron_expressions=[cron]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def create_schedule(
    client: Client,
    schedule_id: str = DEFAULT_SCHEDULE_ID,
    *,
    cron: str = DEFAULT_CRON,
    task_queue: str,
    grace_period_seconds: int | None = None,
) -> str:
    """Create the schedule, or replace it when it exists; returns "created" or "updated".

    The cron text is kept in the schedule's memo (the server stores it as calendar specs).
    """
    schedule = _schedule(cron, task_queue, grace_period_seconds, schedule_id)
    outcome = "created"
    for _ in range(2):
        try:
            await client.create_schedule(schedule_id, schedule, memo={"cron": cron})
            return outcome
        except ScheduleAlreadyRunningError:
            await client.get_schedule_handle(schedule_id).delete()
            outcome = "updated"
        except RPCError as err:
            if err.status == RPCStatusCode.INVALID_ARGUMENT:
                raise InvalidRequest(f"invalid schedule: {err.message} (cron {cron!r})") from None
            raise Refused(f"cannot create schedule {schedule_id}: {err.message}") from None
    raise Refused(f"schedule {schedule_id} was re-created concurrently; try again")


async def list_schedules(client: Client) -> list[ScheduleSummary]:
    """Schedules whose action starts LaunchPeriodsWorkflow."""
    summaries: list[ScheduleSummary] = []
    async for entry in await client.list_schedules():
        action = entry.schedule.action if entry.schedule else None
        workflow_type = getattr(action, "workflow", None)
        if workflow_type != LAUNCH_WORKFLOW_TYPE:
            continue
        description = await client.get_schedule_handle(entry.id).describe()
        spec = description.schedule.spec
        cron = str(await description.memo_value("cron", ""))
        summaries.append(
            ScheduleSummary(
                id=entry.id,
                cron=[cron] if cron else list(spec.cron_expressions),
                paused=description.schedule.state.paused,
                next_runs=list(description.info.next_action_times[:3]),
                recent_actions=description.info.num_actions,
            )
        )
    return summaries


async def delete_schedule(client: Client, schedule_id: str) -> None:
    try:
        await client.get_schedule_handle(schedule_id).delete()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise Refused(
                f"no schedule {schedule_id!r}: `billing schedule list` shows the ids"
            ) from None
        raise Refused(f"cannot delete schedule {schedule_id}: {err.message}") from None
