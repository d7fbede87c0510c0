"""Invoice operations: draft, refresh, fee adjustments, finalize or close.

Each function is one unit of work, idempotent on its business key: the draft on
(subscription, period start), the finalization on the invoice (a second call returns the
stored outcome and consumes nothing). Pricing is :func:`billing.fees.compute_fees`; the
totals, the empty-invoice rule and the numbering are in :mod:`billing.invoicing`.

Finalization (:func:`finalize_invoice`), in one transaction: lock the invoice, recompute
its fees, then either close it (``billing.invoicing.should_close``: empty, and the
customer's setting says skip; no number, no webhook, nothing consumed) or apply coupons,
taxes and prepaid credits, take the next number of the billing entity's gapless sequence
and write the ``invoice.created`` outbox rows.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine

from billing.errors import InvoiceNotEditable
from billing.fees import compute_fees
from billing.invoicing import (
    draft_number,
    draft_totals,
    final_number,
    finalization_totals,
    invoice_id_for,
    should_close,
    tax_rate,
)
from billing.models import AdjustedFee, BillingContext, Fee, Invoice, InvoiceStatus
from billing.plans import require_charge
from services.periods import PeriodSettings, period_settings
from store.unit_of_work import UnitOfWork
from store.webhooks import INVOICE_CREATED, INVOICE_DRAFTED

__all__ = [
    "DraftOutcome",
    "FinalizationOutcome",
    "adjust_fee",
    "create_draft",
    "draft_invoice",
    "finalize_invoice",
    "find_invoice",
    "get_invoice",
    "list_adjustments",
    "list_invoices",
    "queue_drafted_webhook",
    "refresh_draft",
    "remove_fee_adjustment",
]


class FinalizationOutcome(BaseModel):
    """The finalized (or closed) invoice and the ``invoice.created`` deliveries to send."""

    model_config = ConfigDict(frozen=True)

    invoice: Invoice
    delivery_ids: list[str] = []


class DraftOutcome(BaseModel):
    """The period's settings, its draft and the ``invoice.drafted`` deliveries to send."""

    model_config = ConfigDict(frozen=True)

    settings: PeriodSettings
    invoice: Invoice
    delivery_ids: list[str] = []


def _require_draft(invoice: Invoice) -> None:
    if invoice.status != InvoiceStatus.DRAFT:
        raise InvoiceNotEditable(invoice.number or invoice.id, invoice.status.value)


def _fees(
    uow: UnitOfWork,
    context: BillingContext,
    invoice: Invoice,
    adjustments: dict[str, AdjustedFee] | None = None,
) -> tuple[Fee, ...]:
    """The invoice's fees computed from its period's usage and its adjustments
    (``adjustments``: when already known, e.g. none on a draft just inserted)."""
    start, end = invoice.period_start, invoice.period_end
    return compute_fees(
        context.plan,
        context.metrics,
        context.subscription,
        start,
        end,
        context.currency,
        context.timezone,
        uow.usage.charge_usage(context, start, end),
        uow.invoices.adjustments(invoice.id) if adjustments is None else adjustments,
    )


def _recompute_draft(
    uow: UnitOfWork,
    invoice: Invoice,
    context: BillingContext,
    adjustments: dict[str, AdjustedFee] | None = None,
) -> Invoice:
    """Recompute a draft's fees and totals, and store them (``invoice`` as read in this
    unit of work: its fees are rewritten only when they changed)."""
    fees = _fees(uow, context, invoice, adjustments)
    rate = tax_rate(context.customer, context.billing_entity)
    return uow.invoices.save_draft(
        invoice.id, draft_totals(fees, rate, context.currency), rate, stored_fees=invoice.fees
    )


def create_draft(
    engine: Engine, subscription_external_id: str, period_start: datetime, period_end: datetime
) -> Invoice:
    """The draft of a (subscription, period); returns the stored invoice if it exists."""
    invoice_id = invoice_id_for(subscription_external_id, period_start)
    with UnitOfWork(engine) as uow:
        existing = uow.invoices.find(invoice_id)
        if existing is not None:
            return existing
        context = uow.catalog.billing_context(subscription_external_id)
        number = draft_number(context.billing_entity.invoice_prefix)
        draft = uow.invoices.add_draft(invoice_id, number, context, period_start, period_end)
        if draft is None:  # created concurrently by another attempt
            draft = uow.invoices.get(invoice_id)
        else:  # just inserted: no fees, no adjustments yet
            draft = _recompute_draft(uow, draft, context, adjustments={})
        uow.commit()
        return draft


def draft_invoice(
    engine: Engine, subscription_external_id: str, period_start: datetime, period_end: datetime
) -> DraftOutcome:
    """The period-end step in one unit of work: settings, draft, ``invoice.drafted`` rows.

    Idempotent on (subscription, period start): a repeat returns the stored draft (or the
    invoice it became) and the deliveries already queued.
    """
    invoice_id = invoice_id_for(subscription_external_id, period_start)
    with UnitOfWork(engine) as uow:
        context = uow.catalog.billing_context(subscription_external_id)
        settings = period_settings(context, period_start, period_end)
        invoice = uow.invoices.find(invoice_id)
        if invoice is None:
            number = draft_number(context.billing_entity.invoice_prefix)
            inserted = uow.invoices.add_draft(invoice_id, number, context, period_start, period_end)
            invoice = uow.invoices.get(invoice_id)
            if inserted:  # else created concurrently by another attempt
                invoice = _recompute_draft(uow, invoice, context)
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
        _require_draft(invoice)
        context = uow.catalog.billing_context(invoice.subscription_external_id)
        refreshed = _recompute_draft(uow, invoice, context)
        uow.commit()
        return refreshed


def adjust_fee(engine: Engine, invoice_id: str, adjustment: AdjustedFee) -> Invoice:
    """Store an operator's fee edit (replacing an earlier one) and recompute the draft."""
    with UnitOfWork(engine) as uow:
        invoice = uow.invoices.lock(invoice_id)
        _require_draft(invoice)
        context = uow.catalog.billing_context(invoice.subscription_external_id)
        require_charge(adjustment.charge_code, context.charge_codes)
        uow.invoices.save_adjustment(invoice_id, adjustment)
        adjusted = _recompute_draft(uow, invoice, context)
        uow.commit()
        return adjusted


def remove_fee_adjustment(engine: Engine, invoice_id: str, charge_code: str) -> Invoice:
    """Drop an operator's edit: the computed fee comes back. Idempotent."""
    with UnitOfWork(engine) as uow:
        invoice = uow.invoices.lock(invoice_id)
        _require_draft(invoice)
        uow.invoices.delete_adjustment(invoice_id, charge_code)
        context = uow.catalog.billing_context(invoice.subscription_external_id)
        restored = _recompute_draft(uow, invoice, context)
        uow.commit()
        return restored


def finalize_invoice(engine: Engine, invoice_id: str, issued_at: datetime) -> FinalizationOutcome:
    """Finalize or close a draft, in one transaction; a repeat returns the stored outcome."""
    with UnitOfWork(engine) as uow:
        invoice = uow.invoices.lock(invoice_id)
        if invoice.status != InvoiceStatus.DRAFT:
            return FinalizationOutcome(
                invoice=invoice,
                delivery_ids=uow.webhooks.delivery_ids(invoice_id, INVOICE_CREATED),
            )
        context = uow.catalog.billing_context(invoice.subscription_external_id)
        customer, entity = context.customer, context.billing_entity
        fees = _fees(uow, context, invoice)
        rate = tax_rate(customer, entity)

        if should_close(fees, entity, customer):
            closed = uow.invoices.close(
                invoice_id,
                draft_totals(fees, rate, context.currency),
                rate,
                issued_at,
                stored_fees=invoice.fees,
            )
            uow.commit()
            return FinalizationOutcome(invoice=closed)

        totals = finalization_totals(
            fees,
            uow.coupons.lock_active(customer.external_id),
            rate,
            uow.coupons.lock_wallet_balance(customer.external_id),
            context.currency,
        )
        uow.coupons.consume(invoice_id, customer.external_id, totals, issued_at)
        number = final_number(entity.invoice_prefix, uow.invoices.next_number(entity.code))
        finalized = uow.invoices.finalize(
            invoice_id, totals, rate, number, issued_at, stored_fees=invoice.fees
        )
        delivery_ids = uow.webhooks.queue(finalized, INVOICE_CREATED, issued_at)
        uow.commit()
        return FinalizationOutcome(invoice=finalized, delivery_ids=delivery_ids)


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
