"""Invoice operations before finalization: the draft, its refresh, the operators' fee
edits, and reading invoices.

Each function is one unit of work, idempotent on its business key (the draft on
(subscription, period start)) and records its change on the invoice timeline
(:mod:`services.timeline`). Pricing is :mod:`services.draft_fees`; finalization and its
preview are :mod:`services.finalization`; grace period deadlines are
:mod:`services.grace_periods`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine

from billing.invoicing import draft_number, invoice_id_for
from billing.models import AdjustedFee, BillingContext, Invoice, InvoiceStatus
from billing.plans import require_charge
from billing.timeline import SYSTEM_ACTOR, TimelineKind
from services.draft_fees import recompute_draft, require_draft
from services.periods import PeriodSettings, period_settings
from services.timeline import record_change
from store.unit_of_work import UnitOfWork
from store.webhooks import INVOICE_DRAFTED

__all__ = [
    "DraftOutcome",
    "adjust_fee",
    "create_draft",
    "draft_invoice",
    "find_invoice",
    "get_invoice",
    "list_adjustments",
    "list_invoices",
    "queue_drafted_webhook",
    "refresh_draft",
    "remove_fee_adjustment",
]

DAY = timedelta(days=1)


class DraftOutcome(BaseModel):
    """The period's settings, its draft and the ``invoice.drafted`` deliveries to send."""

    model_config = ConfigDict(frozen=True)

    settings: PeriodSettings
    invoice: Invoice
    delivery_ids: list[str] = []


def _insert_draft(
    uow: UnitOfWork,
    invoice_id: str,
    context: BillingContext,
    period_start: datetime,
    period_end: datetime,
    drafted_at: datetime | None,
    grace_period_seconds: int | None,
) -> Invoice:
    """Insert the draft with its grace period and its first fees, and record it; the
    stored invoice when another attempt inserted it first."""
    drafted_at = drafted_at or datetime.now(UTC)
    if grace_period_seconds is not None:
        grace = timedelta(seconds=grace_period_seconds)
    else:
        grace = context.grace_period_days * DAY
    inserted = uow.invoices.add_draft(
        invoice_id,
        draft_number(context.billing_entity.invoice_prefix),
        context,
        period_start,
        period_end,
        drafted_at=drafted_at,
        expected_finalization_at=drafted_at + grace,
        grace_period_fixed=grace_period_seconds is not None,
    )
    if inserted is None:  # created concurrently by another attempt
        return uow.invoices.get(invoice_id)
    draft = recompute_draft(uow, inserted, context, adjustments={})  # no edits yet
    record_change(
        uow,
        "draft_created",
        draft,
        TimelineKind.DRAFT_CREATED,
        SYSTEM_ACTOR,
        f"draft created with {len(draft.fees)} fees, total {draft.total_amount_cents} "
        f"cents; the grace period ends at {(drafted_at + grace).isoformat()}",
        at=drafted_at,
    )
    return draft


def create_draft(
    engine: Engine,
    subscription_external_id: str,
    period_start: datetime,
    period_end: datetime,
    *,
    drafted_at: datetime | None = None,
    grace_period_seconds: int | None = None,
) -> Invoice:
    """The draft of a (subscription, period); returns the stored invoice if it exists.

    ``drafted_at`` (the workflow's clock; default now) starts the grace period, which lasts
    ``grace_period_seconds`` when given (then catalog changes do not move it), else the
    customer's grace period days.
    """
    invoice_id = invoice_id_for(subscription_external_id, period_start)
    with UnitOfWork(engine) as uow:
        existing = uow.invoices.find(invoice_id)
        if existing is not None:
            return existing
        context = uow.catalog.billing_context(subscription_external_id)
        draft = _insert_draft(
            uow, invoice_id, context, period_start, period_end, drafted_at, grace_period_seconds
        )
        uow.commit()
        return draft


def draft_invoice(
    engine: Engine,
    subscription_external_id: str,
    period_start: datetime,
    period_end: datetime,
    *,
    drafted_at: datetime | None = None,
    grace_period_seconds: int | None = None,
) -> DraftOutcome:
    """The period-end step in one unit of work: settings, draft, ``invoice.drafted`` rows.

    Idempotent on (subscription, period start): a repeat returns the stored draft (or the
    invoice it became) and the deliveries already queued. The grace period as in
    :func:`create_draft`.
    """
    invoice_id = invoice_id_for(subscription_external_id, period_start)
    with UnitOfWork(engine) as uow:
        context = uow.catalog.billing_context(subscription_external_id)
        settings = period_settings(context, period_start, period_end)
        invoice = uow.invoices.find(invoice_id)
        if invoice is None:
            invoice = _insert_draft(
                uow, invoice_id, context, period_start, period_end, drafted_at, grace_period_seconds
            )
        delivery_ids: list[str] = []
        if context.billing_entity.send_invoice_drafted_webhook:
            delivery_ids = uow.webhooks.delivery_ids(invoice_id, INVOICE_DRAFTED)
            if not delivery_ids and invoice.status == InvoiceStatus.DRAFT:
                delivery_ids = uow.webhooks.queue(invoice, INVOICE_DRAFTED, datetime.now(UTC))
        uow.commit()
        return DraftOutcome(settings=settings, invoice=invoice, delivery_ids=delivery_ids)


def refresh_draft(engine: Engine, invoice_id: str) -> Invoice:
    """Recompute every fee of a draft from its events and adjustments."""
    with UnitOfWork(engine) as uow:
        invoice = uow.invoices.lock(invoice_id)
        require_draft(invoice)
        context = uow.catalog.billing_context(invoice.subscription_external_id)
        refreshed = recompute_draft(uow, invoice, context)
        uow.commit()
        return refreshed


def adjust_fee(engine: Engine, invoice_id: str, adjustment: AdjustedFee) -> Invoice:
    """Store an operator's fee edit (replacing an earlier one) and recompute the draft."""
    with UnitOfWork(engine) as uow:
        invoice = uow.invoices.lock(invoice_id)
        require_draft(invoice)
        context = uow.catalog.billing_context(invoice.subscription_external_id)
        require_charge(adjustment.charge_code, context.charge_codes)
        uow.invoices.save_adjustment(invoice_id, adjustment)
        adjusted = recompute_draft(uow, invoice, context)
        uow.commit()
        return adjusted


def remove_fee_adjustment(engine: Engine, invoice_id: str, charge_code: str) -> Invoice:
    """Drop an operator's edit: the computed fee comes back. Idempotent."""
    with UnitOfWork(engine) as uow:
        invoice = uow.invoices.lock(invoice_id)
        require_draft(invoice)
        uow.invoices.delete_adjustment(invoice_id, charge_code)
        context = uow.catalog.billing_context(invoice.subscription_external_id)
        restored = recompute_draft(uow, invoice, context)
        uow.commit()
        return restored


def queue_drafted_webhook(engine: Engine, invoice_id: str) -> list[str]:
    """``invoice.drafted`` outbox rows, when the billing entity sends them; idempotent."""
    with UnitOfWork(engine) as uow:
        invoice = uow.invoices.lock(invoice_id)
        if not uow.catalog.sends_drafted_webhook(invoice.billing_entity_code):
            return []
        existing = uow.webhooks.delivery_ids(invoice_id, INVOICE_DRAFTED)
        if existing or invoice.status != InvoiceStatus.DRAFT:
            return existing
        queued = uow.webhooks.queue(invoice, INVOICE_DRAFTED, datetime.now(UTC))
        uow.commit()
        return queued


def get_invoice(engine: Engine, invoice_id: str) -> Invoice:
    """The invoice; raises ``NotFound`` when there is none."""
    with UnitOfWork(engine) as uow:
        return uow.invoices.get(invoice_id)


def find_invoice(
    engine: Engine, subscription_external_id: str, period_start: datetime
) -> Invoice | None:
    """The invoice of a (subscription, period), if one was drafted."""
    with UnitOfWork(engine) as uow:
        return uow.invoices.find_for_period(subscription_external_id, period_start)


def list_invoices(
    engine: Engine,
    *,
    customer_external_id: str | None = None,
    subscription_external_id: str | None = None,
    status: InvoiceStatus | str | None = None,
) -> list[Invoice]:
    """Invoices by period start, then subscription; filters combine."""
    with UnitOfWork(engine) as uow:
        return uow.invoices.find_all(
            customer_external_id=customer_external_id,
            subscription_external_id=subscription_external_id,
            status=None if status is None else InvoiceStatus(status),
        )


def list_adjustments(engine: Engine, invoice_id: str) -> list[AdjustedFee]:
    """The operator's edits stored for an invoice, by charge code."""
    with UnitOfWork(engine) as uow:
        adjustments = uow.invoices.adjustments(invoice_id)
        return [adjustments[code] for code in sorted(adjustments)]
