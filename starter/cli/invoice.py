"""``billing invoice``: show, list, preview, timeline, refresh, finalize and approve."""

from __future__ import annotations

from datetime import datetime

import click

from starter.cli._common import (
    first_day,
    invoice_json_option,
    json_option,
    local,
    period_start_option,
    requested_by_option,
    run,
    show_invoice,
)


@click.group()
def invoice() -> None:
    """Inspect, preview, refresh, finalize and approve invoices."""


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
    invoice = snapshot.invoice
    if invoice is None:
        console.print(f"no invoice yet: the period is open until {snapshot.period_end.isoformat()}")
        return
    show_invoice(invoice, False)  # with its expected finalization and approval
    if snapshot.auto_approve_at is not None and invoice.awaiting_approval:
        console.print(f"approves itself at {snapshot.auto_approve_at.isoformat()}")
    if invoice.awaiting_approval:
        console.print(_approve_hint(subscription, period_start))


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


@invoice.command("preview")
@click.argument("subscription")
@period_start_option
@invoice_json_option
def invoice_preview(subscription: str, period_start: datetime | None, as_json: bool) -> None:
    """The invoice as finalizing it now would make it; nothing changes.

    Coupons, taxes, prepaid credits and the empty-invoice rule are applied as they would
    be, but nothing is consumed and no number is taken. JSON: the invoice JSON with
    ``"preview": true``, ``"number": null`` and ``"status"`` ``finalized`` or ``closed``.
    A finalized or closed invoice has nothing to preview (exit 1; ``invoice show`` prints it).
    """
    preview = run(lambda b: b.preview_invoice(subscription, first_day(period_start)))
    show_invoice(preview, as_json)


@invoice.command("timeline")
@click.argument("subscription")
@period_start_option
@json_option
def invoice_timeline(subscription: str, period_start: datetime | None, as_json: bool) -> None:
    """Every change of the period's invoice, in order: what, when, who, the total after.

    Read from the database (no Temporal needed), so it outlives the workflow. JSON:
    ``{"invoice_id": ..., "entries": [{at, kind, actor, summary, total_amount_cents}]}``.
    """
    from starter.output import console, print_json, timeline_table

    timeline = run(
        lambda b: b.invoice_timeline(subscription, first_day(period_start)), temporal=False
    )
    if as_json:
        print_json(timeline)
        return
    title = (
        f"Timeline of {timeline.invoice_number} ({timeline.status.value}) · "
        f"{timeline.subscription_external_id} · {timeline.period_start:%Y-%m-%d}"
    )
    console.print(timeline_table(timeline.entries, timeline.currency, title=title))


@invoice.command("refresh")
@click.argument("subscription")
@period_start_option
@requested_by_option
@invoice_json_option
def invoice_refresh(
    subscription: str, period_start: datetime | None, requested_by: str | None, as_json: bool
) -> None:
    """Recompute the draft from its events and adjustments."""
    invoice = run(
        lambda b: b.refresh_invoice(
            subscription, first_day(period_start), requested_by=requested_by
        )
    )
    show_invoice(invoice, as_json)


@invoice.command("finalize")
@click.argument("subscription")
@period_start_option
@requested_by_option
@invoice_json_option
def invoice_finalize(
    subscription: str, period_start: datetime | None, requested_by: str | None, as_json: bool
) -> None:
    """End the grace period now: finalize (or close, when empty and skipped) the invoice.

    When an approval rule matches, the invoice is held instead: it stays a draft with
    ``"approval": {"status": "required", ...}`` until `billing invoice approve`.
    """
    from starter.output import err_console

    invoice = run(
        lambda b: b.finalize_invoice(
            subscription, first_day(period_start), requested_by=requested_by
        )
    )
    show_invoice(invoice, as_json)
    if invoice.awaiting_approval:
        err_console.print(_approve_hint(subscription, period_start, held=True))


@invoice.command("approve")
@click.argument("subscription")
@period_start_option
@click.option("--note", default=None, help="Why it is approved (kept with the approval).")
@requested_by_option
@invoice_json_option
def invoice_approve(
    subscription: str,
    period_start: datetime | None,
    note: str | None,
    requested_by: str | None,
    as_json: bool,
) -> None:
    """Approve the invoice and finalize it now.

    A held invoice is finalized with ``"approval": {"status": "approved", "approved_by":
    ..., "approved_at": ..., "note": ...}``; a draft that needs no approval is finalized
    like `invoice finalize`. A finalized or closed invoice: nothing to approve (exit 1).
    """
    invoice = run(
        lambda b: b.approve_invoice(
            subscription, first_day(period_start), note=note, requested_by=requested_by
        )
    )
    show_invoice(invoice, as_json)


def _approve_hint(subscription: str, period_start: datetime | None, *, held: bool = False) -> str:
    from rich.markup import escape

    period = "" if period_start is None else f" --period-start {period_start:%Y-%m-%d}"
    prefix = "held for approval: " if held else ""
    return escape(f"{prefix}approve it with `billing invoice approve {subscription}{period}`")
