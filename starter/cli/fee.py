"""``billing fee edit``: correct fees on a draft invoice during its grace period."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import click

from starter.cli._common import (
    DECIMAL,
    EXIT_USAGE,
    fail,
    first_day,
    invoice_json_option,
    period_start_option,
    requested_by_option,
    run,
    show_invoice,
)


@click.group()
def fee() -> None:
    """Correct fees on a draft invoice (during its grace period)."""


@fee.command("edit")
@click.argument("subscription")
@period_start_option
@click.option("--charge", required=True, help="Charge code (the fee to adjust).")
@click.option(
    "--units", type=DECIMAL, default=None, help="Total units (priced through the charge model)."
)
@click.option(
    "--amount",
    type=DECIMAL,
    default=None,
    help="Unit amount in currency units; the fee becomes units x amount (units default 1: a plain total).",
)
@click.option("--display-name", default=None, help="Name shown on the invoice.")
@click.option("--remove", is_flag=True, help="Remove the adjustment: restore the computed fee.")
@requested_by_option
@invoice_json_option
def fee_edit(
    subscription: str,
    period_start: datetime | None,
    charge: str,
    units: Decimal | None,
    amount: Decimal | None,
    display_name: str | None,
    remove: bool,
    requested_by: str | None,
    as_json: bool,
) -> None:
    """Adjust (or --remove the adjustment of) a fee on SUBSCRIPTION's draft invoice."""
    from pydantic import ValidationError

    from billing.models import AdjustmentMode
    from workflows.messages import EditFee

    day = first_day(period_start)
    if remove:
        if units is not None or amount is not None or display_name is not None:
            fail("--remove takes no --units, --amount or --display-name", EXIT_USAGE)
        invoice = run(
            lambda b: b.remove_fee_adjustment(subscription, day, charge, requested_by=requested_by)
        )
        show_invoice(invoice, as_json)
        return
    if amount is not None:
        mode = AdjustmentMode.AMOUNT
        fields = {
            "units": units if units is not None else Decimal(1),
            "unit_amount": amount,
        }
    elif units is not None:
        mode, fields = AdjustmentMode.UNITS, {"units": units}
    elif display_name is not None:
        mode, fields = AdjustmentMode.DISPLAY_NAME, {}
    else:
        fail("give --units N, --amount X [--units N], --display-name NAME or --remove", EXIT_USAGE)
    try:
        edit = EditFee(
            charge_code=charge,
            mode=mode,
            display_name=display_name,
            requested_by=requested_by,
            **fields,
        )
    except ValidationError as err:
        fail(f"invalid fee edit: {err.errors()[0]['msg']}", EXIT_USAGE)
    invoice = run(lambda b: b.edit_fee(subscription, day, edit))
    show_invoice(invoice, as_json)
