"""``billing wallet top-up``: prepaid credits, consumed at finalization after taxes."""

from __future__ import annotations

import uuid

import click

from starter.cli._common import json_option, local, refresh_drafts, requested_by_option


@click.group()
def wallet() -> None:
    """Prepaid credits: consumed at finalization, after taxes."""


@wallet.command("top-up")
@click.argument("customer")
@click.option("--amount-cents", type=click.IntRange(1), required=True)
@click.option(
    "--transaction-id", default=None, help="Idempotency key (default: a new UUID, printed)."
)
@requested_by_option
@json_option
def wallet_top_up(
    customer: str,
    amount_cents: int,
    transaction_id: str | None,
    requested_by: str | None,
    as_json: bool,
) -> None:
    """Add prepaid credits to CUSTOMER's wallet (idempotent on --transaction-id).

    Then the customer's running drafts are refreshed, so that their ``preview`` query
    includes the credits (best effort: the credits are stored either way).
    """
    from starter.output import money, print_json

    key = transaction_id or str(uuid.uuid4())
    wallet = local(
        lambda billing: billing.top_up_wallet(customer, amount_cents, transaction_id=key)
    )
    if as_json:
        print_json({**wallet.model_dump(mode="json"), "transaction_id": key})
    else:
        click.echo(
            f"wallet of {customer}: balance {money(wallet.balance_cents, '')}(cents {wallet.balance_cents}); transaction {key}"
        )
    refresh_drafts(customer, requested_by, as_json)
