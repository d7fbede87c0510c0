"""The ``billing`` command line: operators' and starter scripts' entry point.

Exit codes scripts can trust: 0 success, 1 the operation was refused or failed
(the message says why), 2 bad usage (flags, files).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from billing.models import UsageEvent
from config.settings import Settings

if TYPE_CHECKING:
    import sqlalchemy

    from billing.models import Invoice
    from starter.client import BillingClient

T = TypeVar("T")

__all__ = ["cli", "main"]

EXIT_REFUSED = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group()
@click.version_option(package_name="billing-periods")
def cli() -> None:
    """Usage-based billing where every billing period is a durable Temporal workflow."""


@cli.command()
@click.option("--demo", is_flag=True, help="Run the demo once the stack is up.")
@click.option("--exit-after-demo", is_flag=True, help="Stop the stack when the demo ends.")
def dev(demo: bool, exit_after_demo: bool) -> None:
    """Run the embedded stack: Temporal dev server + UI, database, webhook sink, worker."""
    from starter.dev import DevStackError, run_dev

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


@cli.command()
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True)
def worker(processes: int) -> None:
    """Run worker processes against TEMPORAL_ADDRESS (SIGINT/SIGTERM stop them cleanly)."""
    from worker import run_workers

    sys.exit(run_workers(processes))


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations to BILLING_DATABASE_URL (idempotent)."""
    from store.db import upgrade

    upgrade(Settings().database_url)
    click.echo("database is up to date")


@cli.group()
def catalog() -> None:
    """Billing entities, customers, metrics, plans, subscriptions, coupons, wallets."""


@catalog.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def catalog_load(file: Path) -> None:
    """Validate and load a YAML catalog (idempotent; nothing is written on error)."""
    from billing.errors import InvalidCatalog
    from store.catalog import load_catalog_file
    from store.db import make_engine

    engine = make_engine(Settings().database_url)
    try:
        report = load_catalog_file(engine, file)
    except InvalidCatalog as err:
        fail(f"{file}: {err}", EXIT_USAGE)
    finally:
        engine.dispose()
    click.echo(f"loaded {file}: {report}")


# --------------------------------------------------------------------------- plumbing
# Every command that talks to Temporal runs its async part in one ``asyncio.run`` and
# returns normally before the interpreter exits (sdk-python issue 300).

_JSON_HELP = "Print JSON (the invoice JSON of DESIGN.md section 6) instead of tables."
json_option = click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
period_start_option = click.option(
    "--period-start",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="First local day of the period (YYYY-MM-DD); default: the period containing now.",
)


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


def _day(value: datetime | None) -> date | None:
    return None if value is None else value.date()


def _run(work: Callable[[BillingClient], Awaitable[T]]) -> T:
    """Connect, run ``work`` with a :class:`BillingClient`, close; errors exit 1 (or 2)."""
    from starter.errors import BillingClientError, InvalidRequest

    async def main() -> T:
        from config.temporal import connect
        from starter.client import BillingClient
        from store.db import make_engine

        settings = Settings()
        engine = make_engine(settings.database_url)
        try:
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


class _Unreachable(Exception):
    pass


def _show_invoice(invoice: Invoice, as_json: bool, title: str | None = None) -> None:
    from starter.output import console, invoice_table, print_json

    if as_json:
        print_json(invoice)
    else:
        console.print(invoice_table(invoice, title=title))


# --------------------------------------------------------------------------- period


@cli.group()
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

    outcome = _run(lambda b: b.start_period(subscription, _day(period_start), grace_seconds))
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
@click.option("--concurrency", type=click.IntRange(1, 256), default=8, show_default=True)
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

    summary = _run(work)
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


# --------------------------------------------------------------------------- usage


@cli.group()
def usage() -> None:
    """Send usage events; each goes to the period containing its timestamp."""


def _parse_property(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--property")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def _read_events(source: str) -> tuple[list[UsageEvent], list[str]]:
    """Events of a JSONL file (``-``: stdin) and ``line N: why`` for each malformed line."""
    from pydantic import ValidationError

    if source == "-":
        lines = sys.stdin.read().splitlines()
    else:
        path = Path(source)
        if not path.is_file():
            fail(f"{source}: no such file (give a JSONL file, or - for stdin)", EXIT_USAGE)
        lines = path.read_text(encoding="utf-8").splitlines()
    events: list[UsageEvent] = []
    problems: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            events.append(UsageEvent.model_validate_json(line))
        except ValidationError as err:
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'line'}: {e['msg']}"
                for e in err.errors()[:3]
            )
            problems.append(f"line {number}: {detail}")
    return events, problems


@usage.command("send")
@click.option("--subscription", help="External subscription id (one event from flags).")
@click.option("--code", help="Billable metric code.")
@click.option("--transaction-id", help="Unique id of the event (default: a new UUID).")
@click.option("--timestamp", help="ISO 8601 time of the event (default: now; no zone means UTC).")
@click.option(
    "--property", "properties", multiple=True, help="KEY=VALUE (VALUE read as JSON when it parses)."
)
@click.option("--file", "file", help="JSONL file of events, one UsageEvent per line; - for stdin.")
@click.option(
    "--grace-seconds",
    type=click.IntRange(0),
    default=None,
    help="Grace period of periods this starts.",
)
@json_option
def usage_send(
    subscription: str | None,
    code: str | None,
    transaction_id: str | None,
    timestamp: str | None,
    properties: tuple[str, ...],
    file: str | None,
    grace_seconds: int | None,
    as_json: bool,
) -> None:
    """Send one event (flags) or many (--file); report accepted / duplicate / rejected.

    Exit code 1 when any event was rejected or any line was malformed (the others are sent).
    """
    from pydantic import ValidationError

    from starter.client import UsageReport
    from starter.output import console, err_console, print_json

    problems: list[str] = []
    if file is not None:
        if subscription or code or transaction_id or timestamp or properties:
            fail("give either --file or the event flags, not both", EXIT_USAGE)
        events, problems = _read_events(file)
    else:
        if not subscription or not code:
            fail("one event needs --subscription and --code (or give --file)", EXIT_USAGE)
        moment = datetime.now(UTC)
        if timestamp is not None:
            try:
                moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
            except ValueError:
                fail(f"--timestamp {timestamp!r}: not an ISO 8601 time", EXIT_USAGE)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
        try:
            events = [
                UsageEvent(
                    transaction_id=transaction_id or str(uuid.uuid4()),
                    external_subscription_id=subscription,
                    code=code,
                    timestamp=moment,
                    properties=dict(_parse_property(p) for p in properties),
                )
            ]
        except ValidationError as err:
            fail(f"invalid event: {err.errors()[0]['msg']}", EXIT_USAGE)

    async def work(billing: BillingClient) -> UsageReport:
        return await billing.send_usage(events, grace_period_seconds=grace_seconds)

    report = _run(work) if events else UsageReport()
    if as_json:
        print_json({**report.model_dump(mode="json"), "malformed": problems})
    else:
        for problem in problems:
            err_console.print(f"[red]malformed[/red] {problem}")
        for delivery in report.periods:
            console.print(
                f"{delivery.workflow_id} ({delivery.period}): {delivery.accepted} accepted, "
                f"{delivery.duplicates} duplicate, {delivery.rejected} rejected"
            )
        for rejection in report.rejected:
            console.print(
                f"[red]rejected[/red] {rejection.transaction_id} ({rejection.code}): {rejection.reason}"
            )
        console.print(
            f"{report.accepted} accepted, {report.duplicates} duplicate, "
            f"{len(report.rejected)} rejected, {len(problems)} malformed"
        )
    if report.rejected or problems:
        sys.exit(EXIT_REFUSED)


# --------------------------------------------------------------------------- fee


@cli.group()
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
@json_option
def fee_edit(
    subscription: str,
    period_start: datetime | None,
    charge: str,
    units: Decimal | None,
    amount: Decimal | None,
    display_name: str | None,
    remove: bool,
    as_json: bool,
) -> None:
    """Adjust (or --remove the adjustment of) a fee on SUBSCRIPTION's draft invoice."""
    from pydantic import ValidationError

    from billing.models import AdjustmentMode
    from workflows.messages import EditFee

    day = _day(period_start)
    if remove:
        if units is not None or amount is not None or display_name is not None:
            fail("--remove takes no --units, --amount or --display-name", EXIT_USAGE)
        invoice = _run(lambda b: b.remove_fee_adjustment(subscription, day, charge))
        _show_invoice(invoice, as_json)
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
        edit = EditFee(charge_code=charge, mode=mode, display_name=display_name, **fields)
    except ValidationError as err:
        fail(f"invalid fee edit: {err.errors()[0]['msg']}", EXIT_USAGE)
    invoice = _run(lambda b: b.edit_fee(subscription, day, edit))
    _show_invoice(invoice, as_json)


# --------------------------------------------------------------------------- invoice


@cli.group()
def invoice() -> None:
    """Inspect, refresh and finalize invoices."""


@invoice.command("show")
@click.argument("subscription")
@period_start_option
@json_option
def invoice_show(subscription: str, period_start: datetime | None, as_json: bool) -> None:
    """The period's invoice: live from the running workflow, else from the database.

    With --json: the invoice JSON; an open period (no draft yet) prints its phase with
    ``"invoice": null``.
    """
    from starter.output import console, print_json

    snapshot = _run(lambda b: b.show_invoice(subscription, _day(period_start)))
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
        _show_invoice(snapshot.invoice, False)


@invoice.command("list")
@click.option("--customer", default=None)
@click.option("--subscription", default=None)
@click.option(
    "--status", type=click.Choice(["draft", "finalized", "closed", "voided"]), default=None
)
@json_option
def invoice_list(
    customer: str | None, subscription: str | None, status: str | None, as_json: bool
) -> None:
    """Invoices in the database (filters combine)."""
    from starter.output import console, invoices_table, print_json
    from store.db import make_engine
    from store.invoices import list_invoices

    engine = make_engine(Settings().database_url)
    try:
        invoices = list_invoices(
            engine,
            customer_external_id=customer,
            subscription_external_id=subscription,
            status=status,
        )
    finally:
        engine.dispose()
    if as_json:
        print_json(invoices)
    else:
        console.print(invoices_table(invoices))


@invoice.command("refresh")
@click.argument("subscription")
@period_start_option
@json_option
def invoice_refresh(subscription: str, period_start: datetime | None, as_json: bool) -> None:
    """Recompute the draft from its events and adjustments."""
    _show_invoice(_run(lambda b: b.refresh_invoice(subscription, _day(period_start))), as_json)


@invoice.command("finalize")
@click.argument("subscription")
@period_start_option
@json_option
def invoice_finalize(subscription: str, period_start: datetime | None, as_json: bool) -> None:
    """End the grace period now: finalize (or close, when empty and skipped) the invoice."""
    _show_invoice(_run(lambda b: b.finalize_invoice(subscription, _day(period_start))), as_json)


# --------------------------------------------------------------------------- coupon, wallet


def _store_call(work: Callable[[sqlalchemy.Engine], T]) -> T:
    from billing.errors import NotFound
    from store.db import make_engine

    engine = make_engine(Settings().database_url)
    try:
        return work(engine)
    except NotFound as err:
        fail(str(err))
    except ValueError as err:
        fail(str(err), EXIT_USAGE)
    finally:
        engine.dispose()
    raise AssertionError("unreachable")  # pragma: no cover


@cli.group()
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
@json_option
def coupon_apply(
    customer: str,
    coupon_code: str,
    applied_id: str | None,
    amount_cents: int | None,
    percentage: Decimal | None,
    as_json: bool,
) -> None:
    """Give COUPON_CODE to CUSTOMER (idempotent on --id)."""
    from starter.output import print_json
    from store.catalog import apply_coupon

    applied = _store_call(
        lambda engine: apply_coupon(
            engine,
            customer_external_id=customer,
            coupon_code=coupon_code,
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


@cli.group()
def wallet() -> None:
    """Prepaid credits: consumed at finalization, after taxes."""


@wallet.command("top-up")
@click.argument("customer")
@click.option("--amount-cents", type=click.IntRange(1), required=True)
@click.option(
    "--transaction-id", default=None, help="Idempotency key (default: a new UUID, printed)."
)
@json_option
def wallet_top_up(
    customer: str, amount_cents: int, transaction_id: str | None, as_json: bool
) -> None:
    """Add prepaid credits to CUSTOMER's wallet (idempotent on --transaction-id)."""
    from starter.output import money, print_json
    from store.catalog import top_up_wallet

    key = transaction_id or str(uuid.uuid4())
    wallet = _store_call(
        lambda engine: top_up_wallet(
            engine, customer_external_id=customer, amount_cents=amount_cents, transaction_id=key
        )
    )
    if as_json:
        print_json({**wallet.model_dump(mode="json"), "transaction_id": key})
    else:
        click.echo(
            f"wallet of {customer}: balance {money(wallet.balance_cents, '')}(cents {wallet.balance_cents}); transaction {key}"
        )


# --------------------------------------------------------------------------- webhook


@cli.group()
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
    from store.webhooks import list_deliveries

    deliveries = _store_call(
        lambda engine: list_deliveries(engine, status=status, invoice_id=invoice_id)
    )
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

    result = _run(lambda b: b.retry_webhook(delivery_id))
    if as_json:
        print_json(result)
    else:
        click.echo(f"webhook {delivery_id}: {result.status}")
    if str(result.status) != "succeeded":
        sys.exit(EXIT_REFUSED)


# --------------------------------------------------------------------------- schedule


@cli.group()
def schedule() -> None:
    """Temporal Schedules that launch billing periods (instead of cron + start-all)."""


@schedule.command("create")
@click.option("--id", "schedule_id", default="billing-month-end", show_default=True)
@click.option("--cron", default="0 1 1 * *", show_default=True, help="When to launch (UTC).")
@click.option(
    "--grace-seconds",
    type=click.IntRange(0),
    default=None,
    help="Override the grace period of launched periods.",
)
def schedule_create(schedule_id: str, cron: str, grace_seconds: int | None) -> None:
    """Create a schedule running LaunchPeriodsWorkflow (idempotent: exists -> updated)."""
    from starter.schedules import create_schedule

    async def work(billing: BillingClient) -> str:
        return await create_schedule(
            billing.client,
            schedule_id,
            cron=cron,
            task_queue=billing.task_queue,
            grace_period_seconds=grace_seconds,
        )

    click.echo(f"schedule {schedule_id}: {_run(work)} (cron {cron!r}, UTC)")


@schedule.command("list")
@json_option
def schedule_list(as_json: bool) -> None:
    """Schedules that launch billing periods."""
    from rich.table import Table

    from starter.output import console, print_json
    from starter.schedules import ScheduleSummary, list_schedules

    async def work(billing: BillingClient) -> list[ScheduleSummary]:
        return await list_schedules(billing.client)

    schedules = _run(work)
    if as_json:
        print_json(schedules)
        return
    table = Table(title="Schedules", title_justify="left")
    for column in ("id", "cron", "paused", "next runs", "recent actions"):
        table.add_column(column)
    for s in schedules:
        table.add_row(
            s.id,
            ", ".join(s.cron),
            str(s.paused),
            ", ".join(t.isoformat() for t in s.next_runs[:2]),
            str(s.recent_actions),
        )
    console.print(table)


@schedule.command("delete")
@click.argument("schedule_id")
def schedule_delete(schedule_id: str) -> None:
    """Delete SCHEDULE_ID (running launches finish; launched periods keep running)."""
    from starter.schedules import delete_schedule

    async def work(billing: BillingClient) -> None:
        await delete_schedule(billing.client, schedule_id)

    _run(work)
    click.echo(f"schedule {schedule_id} deleted")


# --------------------------------------------------------------------------- schema


@cli.command()
def schema() -> None:
    """JSON schema of every workflow input, signal and update payload."""
    from pydantic import BaseModel

    from starter.output import print_json
    from workflows import messages

    models: dict[str, type[BaseModel]] = {
        "BillingPeriodInput": messages.BillingPeriodInput,
        "AddUsage": messages.AddUsage,
        "EditFee": messages.EditFee,
        "RemoveFeeAdjustment": messages.RemoveFeeAdjustment,
        "RefreshInvoice": messages.RefreshInvoice,
        "FinalizeInvoice": messages.FinalizeInvoice,
        "UsageReceipt": messages.UsageReceipt,
        "PeriodView": messages.PeriodView,
    }
    print_json({name: model.model_json_schema() for name, model in models.items()})


def main() -> None:
    """Run the CLI; after a command that used the Temporal SDK, skip interpreter teardown.

    sdk-python issue 300: the SDK's Rust runtime keeps threads that may touch the GIL
    while CPython finalizes, which aborts the process ("PyGILState_Release ... must be
    current", SIGABRT) in roughly one short-lived run out of three here. The async work
    has completed by then (each command runs in one ``asyncio.run``), so once the command
    has returned we flush the output and leave with ``os._exit`` and the command's code.
    """
    try:
        cli.main(standalone_mode=True)
        code = 0
    except SystemExit as stop:
        code = _exit_code(stop.code)
    if not _used_temporal():
        sys.exit(code)
    import logging
    import os

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    click.echo(str(code), err=True)
    return EXIT_REFUSED


def _used_temporal() -> bool:
    """True when the command loaded the SDK (imported lazily, only by commands using it)."""
    return "temporalio" in sys.modules


if __name__ == "__main__":
    main()
