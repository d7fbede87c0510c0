"""``billing webhook``: the delivery log, and retries of failed deliveries."""

from __future__ import annotations

import sys
from typing import Any

import click

from starter.cli._common import EXIT_REFUSED, json_option, local, run


@click.group()
def webhook() -> None:
    """Webhook deliveries: the log, and retries of failed ones."""


@webhook.command("list")
@click.option(
    "--status", type=click.Choice(["pending", "retrying", "succeeded", "failed"]), default=None
)
@click.option("--invoice", "invoice_id", default=None)
@json_option
def webhook_list(status: Any, invoice_id: str | None, as_json: bool) -> None:
    """Every delivery with its status, attempts and last HTTP status."""
    from rich.table import Table

    from starter.output import console, print_json

    deliveries = local(lambda billing: billing.list_webhooks(status=status, invoice_id=invoice_id))
    if as_json:
        print_json(deliveries)
        return
    table = Table(title="Webhook deliveries", title_justify="left")
    for column in ("id", "type", "invoice", "endpoint", "status", "attempts", "HTTP", "updated"):
        table.add_column(column)
    for d in deliveries:
        table.add_row(
            d.id,
            d.webhook_type,
            d.invoice_id,
            d.endpoint_code,
            d.status,
            str(d.attempts),
            str(d.last_http_status or ""),
            f"{d.updated_at:%Y-%m-%d %H:%M:%S}",
        )
    console.print(table)


@webhook.command("retry")
@click.argument("delivery_id")
@json_option
def webhook_retry(delivery_id: str, as_json: bool) -> None:
    """Deliver DELIVERY_ID again (any status) and wait for the outcome."""
    from starter.output import print_json

    result = run(lambda b: b.retry_webhook(delivery_id))
    if as_json:
        print_json(result)
    else:
        click.echo(f"webhook {delivery_id}: {result.status}")
    if str(result.status) != "succeeded":
        sys.exit(EXIT_REFUSED)
