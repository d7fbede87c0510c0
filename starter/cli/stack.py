"""The stack itself: ``billing dev``, ``worker``, ``db upgrade``, ``catalog load``, ``schema``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from config.settings import Settings
from starter.cli._common import EXIT_USAGE, check_payload_keys, fail, local, requested_by_option


@click.command()
@click.option("--demo", is_flag=True, help="Run the demo once the stack is up.")
@click.option("--exit-after-demo", is_flag=True, help="Stop the stack when the demo ends.")
def dev(demo: bool, exit_after_demo: bool) -> None:
    """Run the embedded stack: Temporal dev server + UI, database, webhook sink, worker."""
    from starter.dev import DevStackError, run_dev

    check_payload_keys(Settings())
    after_start = None
    if demo:
        from starter.demo import run_demo

        after_start = run_demo
    try:
        code = asyncio.run(
            run_dev(Settings(), after_start=after_start, stop_after=demo and exit_after_demo)
        )
    except DevStackError as err:
        fail(str(err), EXIT_USAGE)
    sys.exit(code)


@click.command()
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True)
def worker(processes: int) -> None:
    """Run worker processes against TEMPORAL_ADDRESS (SIGINT/SIGTERM stop them cleanly)."""
    from worker import run_workers

    check_payload_keys(Settings())
    sys.exit(run_workers(processes))


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations to BILLING_DATABASE_URL (idempotent)."""
    from store.db import upgrade

    upgrade(Settings().database_url)
    click.echo("database is up to date")


@click.group()
def catalog() -> None:
    """Billing entities, customers, metrics, plans, subscriptions, coupons, wallets."""


@catalog.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--follow/--no-follow",
    default=True,
    show_default=True,
    help="Nudge the running drafts whose grace period the load changed.",
)
@requested_by_option
def catalog_load(file: Path, follow: bool, requested_by: str | None) -> None:
    """Validate and load a YAML catalog (idempotent; nothing is written on error).

    Then every running draft whose grace period the load changed moves its deadline
    (`billing period follow-settings`), unless --no-follow. When Temporal cannot be
    reached the catalog stays loaded and the command exits 1, saying how many drafts
    still need `billing period follow-settings`.
    """
    report = local(lambda billing: billing.load_catalog(file))
    click.echo(f"loaded {file}: {report}")
    if not follow:
        click.echo(
            "grace periods: running drafts not nudged (--no-follow); "
            "`billing period follow-settings` nudges them"
        )
        return
    _follow_after_load(requested_by)


def _follow_after_load(requested_by: str | None) -> None:
    from starter.grace_periods import NotNudged, follow_after_catalog_load

    try:
        report = asyncio.run(follow_after_catalog_load(Settings(), requested_by=requested_by))
    except NotNudged as err:
        fail(
            f"the catalog is loaded, but {err.drafts} running draft(s) still follow the old "
            f"grace period: {err.reason}. Once Temporal is up, run "
            "`billing period follow-settings` (loading the catalog again also does it)."
        )
    if not report.drafts:
        click.echo("grace periods: no running draft to re-time")
        return
    click.echo(f"grace periods: {report.summary()}")
    for gone in report.missing:
        click.echo(f"  missing {gone.workflow_id}: {gone.reason}")
    for failed in report.failed:
        click.echo(f"  failed {failed.workflow_id}: {failed.reason}", err=True)
    if report.failed:
        fail(f"{len(report.failed)} draft(s) not nudged: run `billing period follow-settings`")


@click.command()
def schema() -> None:
    """JSON schema of every workflow input, signal, update and query payload."""
    from pydantic import BaseModel

    from billing.models import InvoicePreview
    from starter.output import print_json
    from workflows import messages

    models: dict[str, type[BaseModel]] = {
        "BillingPeriodInput": messages.BillingPeriodInput,
        "AddUsage": messages.AddUsage,
        "EditFee": messages.EditFee,
        "RemoveFeeAdjustment": messages.RemoveFeeAdjustment,
        "RefreshInvoice": messages.RefreshInvoice,
        "FinalizeInvoice": messages.FinalizeInvoice,
        "ApproveInvoice": messages.ApproveInvoice,
        "RecomputeGracePeriod": messages.RecomputeGracePeriod,
        "UsageReceipt": messages.UsageReceipt,
        "PeriodView": messages.PeriodView,
        "RejectedInput": messages.RejectedInput,
        "InvoicePreview": InvoicePreview,  # what the preview query returns
    }
    print_json({name: model.model_json_schema() for name, model in models.items()})
