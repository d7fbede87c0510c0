"""Rendering for the CLI: rich tables for people, JSON for scripts.

The JSON of an invoice is ``Invoice.model_dump(mode="json")`` (docs/architecture.md): the
same object the webhooks carry. Decimals are fixed-point text (:mod:`billing.decimals`) and
amounts in a table never read ``-0.00``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from billing.approval import ApprovalStatus
from billing.decimals import plain_decimal
from billing.models import Invoice, InvoicePreview, InvoiceStatus
from billing.money import minor_units
from billing.timeline import TimelineEntry

__all__ = [
    "console",
    "err_console",
    "invoice_notes",
    "invoice_table",
    "invoices_table",
    "money",
    "print_json",
    "timeline_table",
    "to_json",
]

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False)


def to_json(value: Any) -> Any:
    """Pydantic models (and lists of them) as JSON-ready data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    return value


def print_json(value: Any) -> None:
    """JSON on stdout, nothing else (scripts parse it)."""
    print(json.dumps(to_json(value), indent=2, default=_json_default), flush=True)


def _json_default(value: Any) -> Any:
    # A bare Decimal outside a model is written like the models write theirs.
    return plain_decimal(value) if isinstance(value, Decimal) else str(value)


def money(cents: int, currency: str) -> str:
    """Minor units as the currency writes them: ``1234, "USD"`` -> ``12.34 USD``, JPY has none.

    Integer arithmetic, so every digit is exact. A discount is passed negated: a zero
    discount reads ``0.00``, never ``-0.00``.
    """
    places = minor_units(currency)
    whole, fraction = divmod(abs(cents), 10**places)
    sign = "-" if cents < 0 else ""
    digits = f"{whole:,}" + (f".{fraction:0{places}d}" if places else "")
    return f"{sign}{digits} {currency}"


def invoice_table(invoice: Invoice, *, title: str | None = None) -> Table:
    """One invoice: its fees, then the totals in Lago's order."""
    period = f"{invoice.period_start:%Y-%m-%d %H:%M}Z .. {invoice.period_end:%Y-%m-%d %H:%M}Z"
    if isinstance(invoice, InvoicePreview):  # no number yet: say what finalizing would do
        default_title = f"PREVIEW: {invoice.status.value} if finalized now (nothing is issued)"
    else:
        default_title = f"{invoice.number} ({invoice.status.value})"
    table = Table(
        title=title or default_title,
        caption=f"{invoice.subscription_external_id} · {invoice.customer_external_id} · {period}",
        title_justify="left",
    )
    table.add_column("fee")
    table.add_column("code")
    table.add_column("units", justify="right")
    table.add_column("events", justify="right")
    table.add_column("amount", justify="right")
    for fee in invoice.fees:
        name = fee.display_name + (" [adjusted]" if fee.adjusted else "")
        table.add_row(
            name,
            fee.code,
            plain_decimal(fee.units.normalize()),
            str(fee.events_count),
            money(fee.amount_cents, invoice.currency),
        )
    if not invoice.fees:
        table.add_row("(no fees)", "", "", "", "")
    table.add_section()
    cur = invoice.currency
    table.add_row("fees", "", "", "", money(invoice.fees_amount_cents, cur))
    table.add_row("coupons", "", "", "", money(-invoice.coupons_amount_cents, cur))
    table.add_row("taxes", "", "", "", money(invoice.taxes_amount_cents, cur))
    table.add_row("prepaid credits", "", "", "", money(-invoice.prepaid_credit_amount_cents, cur))
    table.add_row(
        "[bold]total[/bold]", "", "", "", f"[bold]{money(invoice.total_amount_cents, cur)}[/bold]"
    )
    return table


def invoices_table(invoices: Iterable[Invoice], *, title: str = "Invoices") -> Table:
    table = Table(title=title, title_justify="left")
    columns = ("number", "status", "approval", "subscription", "customer", "period start")
    for column in (*columns, "fees", "total"):
        table.add_column(column, justify="right" if column in ("fees", "total") else "left")
    for invoice in invoices:
        table.add_row(
            invoice.number,
            invoice.status.value,
            "" if invoice.approval is None else invoice.approval.status.value,
            invoice.subscription_external_id,
            invoice.customer_external_id,
            f"{invoice.period_start:%Y-%m-%d %H:%M}Z",
            money(invoice.fees_amount_cents, invoice.currency),
            money(invoice.total_amount_cents, invoice.currency),
        )
    return table


def _when(moment: datetime | None) -> str:
    return "" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


def invoice_notes(invoice: Invoice) -> list[str]:
    """Lines under an invoice table: when a draft finalizes, and its approval."""
    notes: list[str] = []
    due = invoice.expected_finalization_at
    # A held draft's deadline has passed (or finalize was asked): it waits for approval.
    if invoice.status == InvoiceStatus.DRAFT and due is not None and not invoice.awaiting_approval:
        notes.append(f"expected finalization: {_when(due)}")
    approval = invoice.approval
    if approval is None:
        return notes
    if approval.status == ApprovalStatus.REQUIRED:
        notes.append("approval: [bold]required[/bold] (the invoice waits for an approval)")
        notes.extend(f"  - {escape(reason)}" for reason in approval.reasons)
    elif approval.status == ApprovalStatus.APPROVED:
        who = escape(approval.approved_by or "unknown")
        line = f"approval: approved by {who} at {_when(approval.approved_at)}"
        notes.append(line + (f" ({escape(approval.note)})" if approval.note else ""))
    else:
        notes.append("approval: not required")
    return notes


def timeline_table(
    entries: Iterable[TimelineEntry], currency: str, *, title: str = "Timeline"
) -> Table:
    """Every change of an invoice, oldest first, with the total after it."""
    table = Table(title=title, title_justify="left")
    # Only the summary wraps, so a narrow terminal still reads one change per line start.
    table.add_column("at (UTC)", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("actor", max_width=24, overflow="fold")
    table.add_column("total after", justify="right", no_wrap=True)
    table.add_column("summary", ratio=1, overflow="fold")
    for entry in entries:
        table.add_row(
            _when(entry.at),
            entry.kind.value,
            escape(entry.actor),
            money(entry.total_amount_cents, currency),
            escape(entry.summary),
        )
    return table
