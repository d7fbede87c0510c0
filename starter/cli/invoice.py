"""``billing invoice``: show, list, refresh and finalize invoices."""

from __future__ import annotations

from datetime import datetime

import click

from starter.cli._common import (
    first_day,
    invoice_json_option,
    local,
    period_start_option,
    run,
    show_invoice,
)


@click.group()
def invoice() -> None:
    """Inspect, refresh and finalize invoices."""


@invoice.command("show")
@click.argument("subscription")
@period_start_option
@invoice_json_option
def invoice_show(subscription: str, period_start: datetime | None, as_json: bool) -> None:
    """The period's invoice: live from the running workflow, else from the database.

    With --json: the invoice JSON; an open period (no draft yet) prints its phase with
    ``"invoice": null``.
    """
    from starter.output import console, print_json

    snapshot = run(lambda b: b.show_invoice(subscription, first_day(period_start)))
    if as_json:
        print_json(snapshot.invoice if snapshot.invoice is not None else snapshot)
        return
    console.print(
        f"{snapshot.workflow_id}: [bold]{snapshot.phase.value}[/bold] (from the {snapshot.source})"
    )
    if snapshot.grace_period_ends_at is not None and snapshot.phase.value == "draft":
        console.print(f"grace period ends {snapshot.grace_period_ends_at.isoformat()}")
    if snapshot.invoice is None:
        console.print(f"no invoice yet: the period is open until {snapshot.period_end.isoformat()}")
    else:
        show_invoice(snapshot.invoice, False)


@invoice.command("list")
@click.option("--customer", default=None)
@click.option("--subscription", default=None)
@click.option(
    "--status", type=click.Choice(["draft", "finalized", "closed", "voided"]), default=None
)
@invoice_json_option
def invoice_list(
    customer: str | None, subscription: str | None, status: str | None, as_json: bool
) -> None:
    """Invoices in the database (filters combine)."""
    from starter.output import console, invoices_table, print_json

    invoices = local(
        lambda billing: billing.list_invoices(
            customer_external_id=customer, subscription_external_id=subscription, status=status
        )
    )
    if as_json:
        print_json(invoices)
    else:
        console.print(invoices_table(invoices))


@invoice.command("refresh")
@click.argument("subscription")
@period_start_option
@invoice_json_option
def invoice_refresh(subscription: str, period_start: datetime | None, as_json: bool) -> None:
    """Recompute the draft from its events and adjustments."""
    show_invoice(run(lambda b: b.refresh_invoice(subscription, first_day(period_start))), as_json)


@invoice.command("finalize")
@click.argument("subscription")
@period_start_option
@invoice_json_option
def invoice_finalize(subscription: str, period_start: datetime | None, as_json: bool) -> None:
    """End the grace period now: finalize (or close, when empty and skipped) the invoice."""
    show_invoice(run(lambda b: b.finalize_invoice(subscription, first_day(period_start))), as_json)
