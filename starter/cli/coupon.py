"""``billing coupon apply``: coupons, applied at the customer's next finalization."""

from __future__ import annotations

from decimal import Decimal

import click

from starter.cli._common import DECIMAL, json_option, local, refresh_drafts, requested_by_option


@click.group()
def coupon() -> None:
    """Coupons: applied at the customer's next finalization, never to a draft."""


@coupon.command("apply")
@click.argument("customer")
@click.argument("coupon_code")
@click.option(
    "--id", "applied_id", default=None, help="Idempotency key (default: CUSTOMER/COUPON_CODE)."
)
@click.option(
    "--amount-cents", type=click.IntRange(0), default=None, help="Override a fixed coupon's amount."
)
@click.option(
    "--percentage", type=DECIMAL, default=None, help="Override a percentage coupon's rate."
)
@requested_by_option
@json_option
def coupon_apply(
    customer: str,
    coupon_code: str,
    applied_id: str | None,
    amount_cents: int | None,
    percentage: Decimal | None,
    requested_by: str | None,
    as_json: bool,
) -> None:
    """Give COUPON_CODE to CUSTOMER (idempotent on --id).

    Then the customer's running drafts are refreshed, so that their ``preview`` query
    includes the coupon (best effort: the coupon is stored either way).
    """
    from starter.output import print_json

    applied = local(
        lambda billing: billing.apply_coupon(
            customer,
            coupon_code,
            applied_coupon_id=applied_id or f"{customer}/{coupon_code}",
            amount_cents=amount_cents,
            percentage_rate=percentage,
        )
    )
    if as_json:
        print_json(applied)
    else:
        click.echo(
            f"coupon {applied.coupon_code} applied to {applied.customer_external_id} (id {applied.id}); it applies at the next finalization"
        )
    refresh_drafts(customer, requested_by, as_json)
