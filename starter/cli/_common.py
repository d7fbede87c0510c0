"""What every command shares: exit codes, options, and the two ways to get a client.

Every command that talks to Temporal runs its async part in one ``asyncio.run`` and
returns normally before the interpreter exits (sdk-python issue 300).
"""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from config.settings import Settings

if TYPE_CHECKING:
    from billing.models import Invoice
    from starter.client import BillingClient
    from starter.store_access import StoreAccess

T = TypeVar("T")

__all__ = [
    "DECIMAL",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "check_payload_keys",
    "fail",
    "first_day",
    "invoice_json_option",
    "json_option",
    "local",
    "period_start_option",
    "requested_by_option",
    "run",
    "show_invoice",
]

EXIT_REFUSED = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
invoice_json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print the invoice JSON (docs/architecture.md, "Invoice JSON") instead of tables.',
)
period_start_option = click.option(
    "--period-start",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="First local day of the period (YYYY-MM-DD); default: the period containing now.",
)


MAX_ACTOR_LENGTH = 200  # workflows.messages: a mutation's requested_by


def default_actor() -> str | None:
    """Who runs the CLI: ``BILLING_ACTOR``, else the OS user name, else nobody (None)."""
    actor = os.environ.get("BILLING_ACTOR", "").strip()
    if actor:
        return actor[:MAX_ACTOR_LENGTH]
    try:
        user = getpass.getuser().strip()
    except Exception:  # no USER/LOGNAME and no passwd entry (some containers)
        return None
    return user[:MAX_ACTOR_LENGTH] or None


def _check_actor(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_ACTOR_LENGTH:
        raise click.BadParameter(f"give a name of 1 to {MAX_ACTOR_LENGTH} characters")
    return value


requested_by_option = click.option(
    "--requested-by",
    "requested_by",
    default=default_actor,
    show_default="$BILLING_ACTOR, else the OS user name",
    callback=_check_actor,
    help="Who asks for the change (recorded in the invoice timeline).",
)


def refresh_drafts(customer: str, requested_by: str | None, as_json: bool) -> None:
    """After a coupon or a top-up: refresh the customer's running drafts and say so
    (on stderr with --json, which keeps stdout the JSON)."""
    from starter.customer_drafts import refresh_after_store_change

    said = refresh_after_store_change(Settings(), customer, requested_by=requested_by)
    click.echo(said, err=as_json)


class _DecimalType(click.ParamType):  # type: ignore[type-arg]
    name = "decimal"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Decimal:
        if isinstance(value, Decimal):
            return value
        try:
            number = Decimal(str(value))
        except ArithmeticError:
            self.fail(f"{value!r} is not a decimal number", param, ctx)
        if not number.is_finite():
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


DECIMAL = _DecimalType()


def first_day(value: datetime | None) -> date | None:
    return None if value is None else value.date()


def check_payload_keys(settings: Settings) -> None:
    """Exit 2 with the reason when the payload keys are unusable (before anything starts)."""
    from config.codec import PayloadKeyError, payload_codec

    try:
        payload_codec(settings)
    except PayloadKeyError as err:
        fail(str(err), EXIT_USAGE)


def run(work: Callable[[BillingClient], Awaitable[T]], *, temporal: bool = True) -> T:
    """Connect, run ``work`` with a :class:`BillingClient`, close; errors exit 1 (or 2).

    ``temporal=False``: a client of the store only, for reads that never need Temporal
    (the invoice timeline), so they work while Temporal is down.
    """
    from starter.errors import BillingClientError, InvalidRequest

    async def main() -> T:
        from config.temporal import connect
        from starter.client import BillingClient
        from store.db import make_engine

        settings = Settings()
        check_payload_keys(settings)
        engine = make_engine(settings.database_url)
        try:
            if not temporal:
                return await work(BillingClient(None, engine, task_queue=settings.task_queue))
            try:
                client = await connect(settings)
            except Exception as err:
                raise _Unreachable(
                    f"cannot connect to Temporal at {settings.temporal_address}: {err}; "
                    "start it with `billing dev` or set TEMPORAL_ADDRESS"
                ) from None
            return await work(BillingClient(client, engine, task_queue=settings.task_queue))
        finally:
            engine.dispose()

    try:
        return asyncio.run(main())
    except InvalidRequest as err:
        fail(str(err), EXIT_USAGE)
    except (BillingClientError, _Unreachable) as err:
        fail(str(err))
    raise AssertionError("unreachable")  # pragma: no cover


def local(work: Callable[[StoreAccess], T]) -> T:
    """Run ``work`` with the client's store side, :class:`StoreAccess` (no Temporal).

    Commands that only read or write the store (invoice list, coupon, wallet, webhook
    list, catalog load) work without a Temporal server and without loading its SDK.
    Errors exit 1, or 2 for a request that can never succeed as given.
    """
    from starter.errors import BillingClientError, InvalidRequest
    from starter.store_access import StoreAccess
    from store.db import make_engine

    settings = Settings()
    engine = make_engine(settings.database_url)
    try:
        return work(StoreAccess(engine))
    except InvalidRequest as err:
        fail(str(err), EXIT_USAGE)
    except BillingClientError as err:
        fail(str(err))
    finally:
        engine.dispose()
    raise AssertionError("unreachable")  # pragma: no cover


class _Unreachable(Exception):
    pass


def show_invoice(invoice: Invoice, as_json: bool, title: str | None = None) -> None:
    from starter.output import console, invoice_notes, invoice_table, print_json

    if as_json:
        print_json(invoice)
        return
    console.print(invoice_table(invoice, title=title))
    for note in invoice_notes(invoice):
        console.print(note)
