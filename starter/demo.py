"""The demo behind ``billing dev --demo``: one month of billing in about a minute.

Called by :func:`starter.dev.run_dev` once the dev server, the webhook sink and the worker
are up. It loads ``examples/catalog.yaml`` (webhook endpoint pointed at the local sink,
signed with the sink's secret), launches LAST month's periods with a short grace period,
and, during that grace period, sends usage (including a late event stamped last month and
one stamped now, which goes to this month's period), edits a fee, and gives a customer a
coupon. Then it waits for the finalizations and shows one invoice finalized with its
``invoice.created`` webhook received and verified, and one empty invoice closed because
its customer's setting says skip. It prints the invoices and where to look in the UI.

Re-running on the same data folder is safe: transaction ids are unique per run, the
coupon is applied once per period, and periods finalized by an earlier run are reported
as such (their invoices are shown again).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from billing.models import AdjustmentMode, Invoice, InvoiceStatus, UsageEvent
from config.settings import Settings
from config.temporal import connect
from starter.client import BillingClient, LaunchStatus, PeriodRef
from starter.dev import webhook_secret
from starter.errors import BillingClientError
from starter.output import console, invoice_table, invoices_table
from store.db import make_engine
from workflows.messages import EditFee

__all__ = ["DEMO_GRACE_SECONDS", "run_demo"]

DEMO_GRACE_SECONDS = 20
CATALOG = Path(__file__).resolve().parents[1] / "examples" / "catalog.yaml"
FINALIZED_SUB = "sub_northwind_growth"  # usage, a fee edit and a coupon: finalized, webhook
EMPTY_SUB = "sub_koala_payg"  # no usage, customer setting "skip": closed
DEMO_COUPON = "partner_5"
WAIT_SECONDS = 120


def say(message: str = "") -> None:
    console.print(message)


def _catalog(settings: Settings) -> dict[str, Any]:
    """The example catalog with its endpoint on this stack's sink and the sink's secret."""
    data: dict[str, Any] = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    for endpoint in data.get("webhook_endpoints", []):
        endpoint["url"] = f"http://127.0.0.1:{settings.webhook_sink_port}/webhooks"
        endpoint.pop("secret_env", None)
        endpoint.pop("default_secret", None)
        endpoint["secret"] = webhook_secret()  # what the sink verifies with (never printed)
    return data


async def run_demo(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    try:
        client = await connect(settings)
        billing = BillingClient(client, engine, task_queue=settings.task_queue)
        await _demo(billing, settings)
    except BillingClientError as err:
        say(f"[red]demo stopped:[/red] {err}")
    finally:
        engine.dispose()


async def _demo(billing: BillingClient, settings: Settings) -> None:
    run = uuid.uuid4().hex[:8]
    report = await asyncio.to_thread(billing.load_catalog, _catalog(settings))
    say(f"\n[bold]1. Catalog[/bold] loaded from {CATALOG.name}: {report}")

    now = datetime.now(UTC)
    last_day = now.date().replace(day=1) - timedelta(days=1)
    say(
        f"\n[bold]2. Launching last month's periods[/bold] (ending {last_day}) with a "
        f"{DEMO_GRACE_SECONDS}s grace period"
    )
    summary = await billing.start_all(last_day, grace_period_seconds=DEMO_GRACE_SECONDS)
    for outcome in summary.outcomes:
        note = f" ({outcome.error})" if outcome.error else ""
        say(f"   {outcome.workflow_id}: {outcome.status.value.replace('_', ' ')}{note}")
    main = billing.period(FINALIZED_SUB, last_day.replace(day=1))
    empty = billing.period(EMPTY_SUB, last_day.replace(day=1))
    statuses = {o.subscription_external_id: o.status for o in summary.outcomes}
    fresh = statuses.get(FINALIZED_SUB) in (LaunchStatus.STARTED, LaunchStatus.ALREADY_RUNNING)

    if fresh:
        await _during_grace(billing, main, run, now)
    else:
        say(
            f"\n   {main.workflow_id} was finalized by an earlier run: usage for it is now "
            "refused, as this shows:"
        )
        late = _event(run, "late-again", main, main.period_end - timedelta(hours=1), user="u-late")
        usage = await billing.send_usage([late])
        for rejection in usage.rejected:
            say(f"   rejected {rejection.transaction_id}: {rejection.reason}")

    if fresh:
        say(f"\n[bold]6. Waiting for the finalizations[/bold] (grace {DEMO_GRACE_SECONDS}s)...")
    final = await _wait_done(billing, main)
    closed = await _wait_done(billing, empty)
    say(
        f"   {FINALIZED_SUB}: [bold]{final.status.value}[/bold] as {final.number} "
        f"(coupons {final.coupons_amount_cents}, credits {final.prepaid_credit_amount_cents}, "
        f"total {final.total_amount_cents} cents)"
    )
    say(
        f"   {EMPTY_SUB}: [bold]{closed.status.value}[/bold]: empty, and customer "
        "cust_koala's finalize_zero_amount_invoice is 'skip' (no number, no webhook)"
    )
    await _show_webhook(billing, settings, final)

    say("")
    console.print(invoice_table(final))
    console.print(invoice_table(closed, title=f"{closed.id} (closed)"))
    this_month = billing.period(FINALIZED_SUB, now)
    snapshot = await billing.show_invoice(FINALIZED_SUB, this_month.local_start)
    say(
        f"   this month's period {snapshot.workflow_id} is {snapshot.phase.value} "
        f"until {snapshot.period_end.isoformat()}"
    )
    invoices = await asyncio.to_thread(billing.list_invoices)
    console.print(invoices_table(invoices, title="All invoices in the database"))
    _where_to_look(settings, main)


async def _during_grace(billing: BillingClient, main: PeriodRef, run: str, now: datetime) -> None:
    await _wait_phase(billing, main, "draft")
    say(f"\n[bold]3. Usage[/bold] routed by timestamp in {main.timezone} (the customer's zone)")
    start = main.period_start
    events = [
        _event(run, f"user-{i}", main, start + timedelta(days=3 + i), user=f"u{i}")
        for i in range(5)
    ]
    events += [
        _event(run, "storage", main, start + timedelta(days=9), code="peak_storage_gb", gb=120),
        # late: stamped in the last hour of last month, arriving during the grace period
        _event(run, "late", main, main.period_end - timedelta(hours=1), user="u-late"),
        # next period: stamped now, so it goes to this month's period (started on demand)
        _event(run, "next-period", main, now, user="u-next"),
        _event(run, "typo", main, start + timedelta(days=4), code="api_cals"),
    ]
    report = await billing.send_usage(events)
    for delivery in report.periods:
        say(
            f"   {delivery.workflow_id} ({delivery.period}): {delivery.accepted} accepted, "
            f"{delivery.duplicates} duplicate, {delivery.rejected} rejected"
        )
    for rejection in report.rejected:
        say(f"   rejected {rejection.transaction_id} ({rejection.code}): {rejection.reason}")

    say("\n[bold]4. Fee edit[/bold] on the draft: peak storage billed at 250 GB (total units)")
    invoice = await billing.edit_fee(
        FINALIZED_SUB,
        main.local_start,
        EditFee(charge_code="peak_storage_gb", mode=AdjustmentMode.UNITS, units=Decimal(250)),
    )
    console.print(invoice_table(invoice, title=f"{invoice.number} (draft, after the edit)"))

    say(
        f"\n[bold]5. Coupon[/bold] {DEMO_COUPON} given to {main.customer_external_id} during "
        "the grace period: not on the draft, applied at finalization"
    )
    await asyncio.to_thread(
        billing.apply_coupon,
        main.customer_external_id,
        DEMO_COUPON,
        applied_coupon_id=f"demo/{main.workflow_id}",
    )


def _event(
    run: str,
    name: str,
    ref: PeriodRef,
    timestamp: datetime,
    *,
    code: str = "active_users",
    user: str | None = None,
    gb: int | None = None,
) -> UsageEvent:
    properties: dict[str, Any] = {}
    if user is not None:
        properties["user_id"] = user
    if gb is not None:
        properties["gb"] = gb
    return UsageEvent(
        transaction_id=f"demo-{run}-{name}",
        external_subscription_id=ref.subscription_external_id,
        code=code,
        timestamp=timestamp,
        properties=properties,
    )


async def _wait_phase(billing: BillingClient, ref: PeriodRef, phase: str) -> None:
    for _ in range(WAIT_SECONDS * 4):
        snapshot = await billing.show_invoice(ref.subscription_external_id, ref.local_start)
        if snapshot.phase.value == phase and snapshot.invoice is not None:
            return
        await asyncio.sleep(0.25)
    raise BillingClientError(f"{ref.workflow_id} did not reach {phase}: is the worker running?")


async def _wait_done(billing: BillingClient, ref: PeriodRef) -> Invoice:
    for _ in range(WAIT_SECONDS * 2):
        snapshot = await billing.show_invoice(ref.subscription_external_id, ref.local_start)
        invoice = snapshot.invoice
        if invoice is not None and invoice.status in (
            InvoiceStatus.FINALIZED,
            InvoiceStatus.CLOSED,
        ):
            return invoice
        await asyncio.sleep(0.5)
    raise BillingClientError(f"{ref.workflow_id} was not finalized within {WAIT_SECONDS}s")


async def _show_webhook(billing: BillingClient, settings: Settings, invoice: Invoice) -> None:
    deliveries = []
    for _ in range(WAIT_SECONDS * 2):
        deliveries = [
            d
            for d in await asyncio.to_thread(billing.list_webhooks, invoice_id=invoice.id)
            if d.webhook_type == "invoice.created"
        ]
        if deliveries and all(d.status in ("succeeded", "failed") for d in deliveries):
            break
        await asyncio.sleep(0.5)
    record_file = settings.data_dir / "webhooks.jsonl"
    received = _received(record_file)
    for delivery in deliveries:
        copies = [r for r in received if r.get("webhook_id") == delivery.id]
        verified = any(r.get("verified") is True for r in copies)
        say(
            f"   webhook invoice.created {delivery.id}: {delivery.status} after "
            f"{delivery.attempts} attempt(s), HTTP {delivery.last_http_status}; received by the "
            f"sink: {'yes' if copies else 'no'}, signature verified: {'yes' if verified else 'no'}"
            f" ({record_file})"
        )
    if not deliveries:
        say("   no invoice.created webhook found for it (see `billing webhook list`)")


def _received(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def _where_to_look(settings: Settings, main: PeriodRef) -> None:
    ui = f"http://{settings.temporal_host}:{settings.ui_port}"
    day = timedelta(days=1)
    since = (main.period_start - day).strftime("%Y-%m-%dT00:00:00Z")
    until = (main.period_start + day).strftime("%Y-%m-%dT00:00:00Z")
    workflows = f"{ui}/namespaces/{settings.temporal_namespace}/workflows"
    say(f"\n[bold]Where to look[/bold]: the Temporal UI at {workflows}")
    say(f"   this period: {workflows}?query={quote(f'WorkflowId = {main.workflow_id!r}')}")
    say("   list queries (paste into the UI's search box):")
    for query in (
        f"BillingCustomer = '{main.customer_external_id}' AND BillingInvoiceStatus = 'draft'",
        f"BillingSubscription = '{main.subscription_external_id}'",
        # periods start at local midnight: a day either side covers every timezone
        f"BillingPeriodStart >= '{since}' AND BillingPeriodStart < '{until}' "
        "AND BillingInvoiceStatus = 'closed'",
        "BillingInvoiceStatus = 'finalized' AND BillingTotalCents > 10000",
        "BillingInvoiceNumber STARTS_WITH 'ACME-'",
    ):
        say(f"     {query}")
    say(
        "   CLI: `billing invoice list`, `billing invoice show SUB --period-start DATE`, `billing webhook list`"
    )
