"""``billing period``: launch billing periods (one workflow per subscription and period),
and nudge running drafts to follow a changed grace period (``follow-settings``)."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING

import click

from starter.bulk import DEFAULT_CONCURRENCY, FOLLOW_CONCURRENCY
from starter.cli._common import (
    EXIT_REFUSED,
    first_day,
    json_option,
    period_start_option,
    requested_by_option,
    run,
)

if TYPE_CHECKING:
    from starter.client import BillingClient
    from starter.grace_periods import FollowReport


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


@period.command("follow-settings")
@requested_by_option
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    default=FOLLOW_CONCURRENCY,
    show_default=True,
    help="Signals in flight at once.",
)
@click.option(
    "--wait",
    "wait_seconds",
    type=click.FloatRange(0),
    default=0,
    show_default=True,
    help="Then wait up to this many seconds until every nudged deadline moved.",
)
@json_option
def period_follow_settings(
    requested_by: str | None, concurrency: int, wait_seconds: float, as_json: bool
) -> None:
    """Nudge every running draft whose grace period no longer follows its settings.

    `billing catalog load` does it after each load; run it after a load made while
    Temporal was down (or with --no-follow). Idempotent: a second run finds nothing.
    Exits 1 when a nudge failed; drafts whose workflow is gone are listed, not fatal.
    """
    from starter.grace_periods import follow_settings, wait_until_followed
    from starter.output import console, print_json

    actor = requested_by

    async def work(billing: BillingClient) -> FollowReport:
        report = await follow_settings(
            billing.client, billing.engine, requested_by=actor, concurrency=concurrency
        )
        if wait_seconds and report.nudged_invoice_ids:
            report.unmoved = await wait_until_followed(
                billing.engine, report.nudged_invoice_ids, timeout=wait_seconds
            )
        return report

    report = run(work)
    if as_json:
        print_json(report)
    else:
        for gone in report.missing:
            console.print(f"[yellow]missing[/yellow] {gone.workflow_id}: {gone.reason}")
        for failed in report.failed:
            console.print(f"[red]failed[/red] {failed.workflow_id}: {failed.reason}")
        console.print(f"{report.summary()} ({report.seconds}s)")
    if report.failed:
        sys.exit(EXIT_REFUSED)
