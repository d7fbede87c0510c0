"""``billing schedule``: Temporal Schedules that launch billing periods."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from starter.cli._common import json_option, run

if TYPE_CHECKING:
    from starter.client import BillingClient


@click.group()
def schedule() -> None:
    """Temporal Schedules that launch billing periods (instead of cron + start-all)."""


@schedule.command("create")
@click.option("--id", "schedule_id", default="billing-month-end", show_default=True)
@click.option("--cron", default="0 1 1 * *", show_default=True, help="When to launch (UTC).")
@click.option(
    "--grace-seconds",
    type=click.IntRange(0),
    default=None,
    help="Override the grace period of launched periods.",
)
def schedule_create(schedule_id: str, cron: str, grace_seconds: int | None) -> None:
    """Create a schedule running LaunchPeriodsWorkflow (idempotent: exists -> updated)."""
    from starter.schedules import create_schedule

    async def work(billing: BillingClient) -> str:
        return await create_schedule(
            billing.client,
            schedule_id,
            cron=cron,
            task_queue=billing.task_queue,
            grace_period_seconds=grace_seconds,
        )

    click.echo(f"schedule {schedule_id}: {run(work)} (cron {cron!r}, UTC)")


@schedule.command("list")
@json_option
def schedule_list(as_json: bool) -> None:
    """Schedules that launch billing periods."""
    from rich.table import Table

    from starter.output import console, print_json
    from starter.schedules import ScheduleSummary, list_schedules

    async def work(billing: BillingClient) -> list[ScheduleSummary]:
        return await list_schedules(billing.client)

    schedules = run(work)
    if as_json:
        print_json(schedules)
        return
    table = Table(title="Schedules", title_justify="left")
    for column in ("id", "cron", "paused", "next runs", "recent actions"):
        table.add_column(column)
    for s in schedules:
        table.add_row(
            s.id,
            ", ".join(s.cron),
            str(s.paused),
            ", ".join(t.isoformat() for t in s.next_runs[:2]),
            str(s.recent_actions),
        )
    console.print(table)


@schedule.command("delete")
@click.argument("schedule_id")
def schedule_delete(schedule_id: str) -> None:
    """Delete SCHEDULE_ID (running launches finish; launched periods keep running)."""
    from starter.schedules import delete_schedule

    async def work(billing: BillingClient) -> None:
        await delete_schedule(billing.client, schedule_id)

    run(work)
    click.echo(f"schedule {schedule_id} deleted")
