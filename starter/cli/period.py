"""``billing period``: launch billing periods (one workflow per subscription and period)."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING

import click

from starter.bulk import DEFAULT_CONCURRENCY
from starter.cli._common import EXIT_REFUSED, first_day, json_option, period_start_option, run

if TYPE_CHECKING:
    from starter.client import BillingClient


@click.group()
def period() -> None:
    """Launch billing periods (one workflow per subscription and period)."""


@period.command("start")
@click.argument("subscription")
@period_start_option
@click.option(
    "--grace-seconds", type=click.IntRange(0), default=None, help="Override the grace period."
)
@json_option
def period_start_cmd(
    subscription: str, period_start: datetime | None, grace_seconds: int | None, as_json: bool
) -> None:
    """Start SUBSCRIPTION's period (idempotent: a second start reports it running)."""
    from starter.output import print_json

    outcome = run(lambda b: b.start_period(subscription, first_day(period_start), grace_seconds))
    if as_json:
        print_json(outcome)
    else:
        click.echo(
            f"{outcome.workflow_id}: {outcome.status.value.replace('_', ' ')} ({outcome.period})"
        )


@period.command("start-all")
@click.option(
    "--period-end",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    required=True,
    help="Last local day of the periods to launch (e.g. 2026-01-31 for January).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Starts in flight at once.",
)
@click.option(
    "--grace-seconds", type=click.IntRange(0), default=None, help="Override the grace period."
)
@json_option
def period_start_all(
    period_end: datetime, concurrency: int, grace_seconds: int | None, as_json: bool
) -> None:
    """Launch every subscription's period that ends on --period-end (idempotent)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from starter.client import LaunchOutcome, LaunchStatus, LaunchSummary
    from starter.output import console, err_console, print_json

    progress = Progress(
        TextColumn("launching periods"), BarColumn(), MofNCompleteColumn(), console=err_console
    )
    task = progress.add_task("launch", total=None)

    def advance(_outcome: LaunchOutcome, total: int) -> None:
        progress.update(task, total=total, advance=1)

    async def work(billing: BillingClient) -> LaunchSummary:
        with progress:
            return await billing.start_all(
                period_end.date(),
                concurrency=concurrency,
                grace_period_seconds=grace_seconds,
                on_outcome=advance,
            )

    summary = run(work)
    if as_json:
        print_json(summary)
    else:
        for outcome in summary.failed:
            console.print(f"[red]failed[/red] {outcome.subscription_external_id}: {outcome.error}")
        console.print(
            f"periods ending {summary.period_end_date}: "
            f"{summary.count(LaunchStatus.STARTED)} started, "
            f"{summary.count(LaunchStatus.ALREADY_RUNNING)} already running, "
            f"{summary.count(LaunchStatus.FINALIZED)} already finalized, "
            f"{summary.count(LaunchStatus.FAILED)} failed"
        )
    if summary.failed:
        sys.exit(EXIT_REFUSED)
