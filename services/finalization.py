"""Finalization: finalize, close or hold a draft, in one transaction; and its preview.

:func:`finalize_invoice` locks the invoice, recomputes its fees, then either closes it
(``billing.invoicing.should_close``: empty, and the customer's setting says skip; no
number, no webhook, nothing consumed), or holds it for approval (``billing.approval``: a
rule matches and nobody approved it; it stays a draft and an
``invoice.approval_required`` webhook is queued), or applies coupons, taxes and prepaid
credits, takes the next number of the billing entity's gapless sequence and writes the
``invoice.created`` outbox rows. Finalizing or closing deletes the period's usage
receipts (its workflow records no usage after that). A repeat returns the stored outcome
and consumes nothing. :func:`preview_invoice` runs the same plan without writing anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine

from billing.approval import ApprovalStatus, InvoiceApproval, approval_reasons
from billing.invoicing import (
    Totals,
    draft_totals,
    final_number,
    finalization_totals,
    should_close,
    tax_rate,
)
from billing.models import BillingContext, Fee, Invoice, InvoicePreview, InvoiceStatus
from billing.timeline import SYSTEM_ACTOR, TimelineKind
from services.draft_fees import draft_fees, require_draft
from services.timeline import record_change
from store.unit_of_work import UnitOfWork
from store.webhooks import INVOICE_APPROVAL_REQUIRED, INVOICE_CREATED

__all__ = [
    "Approval",
    "FinalizationOutcome",
    "finalize_in",
    "finalize_invoice",
    "preview_invoice",
    "preview_of",
    "stored_finalization",
]


class FinalizationOutcome(BaseModel):
    """The finalized (or closed) invoice and the ``invoice.created`` deliveries to send.

    ``held``: an approval rule matched; the invoice is still a draft waiting for approval
    and ``delivery_ids`` are its ``invoice.approval_required`` deliveries.
    ``auto_approve_after_hours``: how long a held invoice waits before it approves itself.
    """

    model_config = ConfigDict(frozen=True)

    invoice: Invoice
    delivery_ids: list[str] = []
    held: bool = False
    auto_approve_after_hours: Decimal | None = None


class Approval(BaseModel):
    """Someone's approval of a held (or any) draft: finalize it now."""

    model_config = ConfigDict(frozen=True)

    approved_by: str
    note: str | None = None


class _Plan(NamedTuple):
    """What finalizing a draft right now would do (nothing written yet)."""

    closes: bool
    totals: Totals
    rate: Decimal
    reasons: list[str]  # approval rules that match; empty when it closes


def _plan(
    uow: UnitOfWork,
    invoice: Invoice,
    context: BillingContext,
    *,
    lock: bool,
    fees: Sequence[Fee] | None = None,
) -> _Plan:
    """What finalizing ``invoice`` now would do; ``lock``: coupons and wallet until commit.

    ``fees``: the draft's fees just computed in this unit of work (else computed here).
    """
    customer, entity = context.customer, context.billing_entity
    if fees is None:
        fees = draft_fees(uow, context, invoice)
    rate = tax_rate(customer, entity)
    if should_close(fees, entity, customer):
        return _Plan(True, draft_totals(fees, rate, context.currency), rate, [])
    if lock:
        coupons = uow.coupons.lock_active(customer.external_id)
        balance = uow.coupons.lock_wallet_balance(customer.external_id)
    else:
        coupons = uow.coupons.active(customer.external_id)
        balance = uow.coupons.wallet(customer.external_id).balance_cents
    totals = finalization_totals(fees, coupons, rate, balance, context.currency)
    rules = context.approval_rules
    previous = None
    if rules is not None and rules.change_above_percent is not None:
        previous = uow.invoices.previous_finalized_total(
            invoice.subscription_external_id, invoice.period_start
        )
    return _Plan(False, totals, rate, approval_reasons(rules, totals.total_amount_cents, previous))


def finalize_invoice(
    engine: Engine,
    invoice_id: str,
    issued_at: datetime,
    *,
    approval: Approval | None = None,
    actor: str = SYSTEM_ACTOR,
) -> FinalizationOutcome:
    """Finalize, close or hold a draft, in one transaction; a repeat returns the stored
    outcome (a held invoice stays held until ``approval`` is given).

    ``approval`` finalizes whatever the rules say; the invoice's approval then reads
    ``approved`` when it was held or a rule matches, else ``not_required``.
    """
    with UnitOfWork(engine) as uow:
        invoice = uow.invoices.lock(invoice_id)
        if invoice.status != InvoiceStatus.DRAFT:
            return stored_finalization(uow, invoice)
        context = uow.catalog.billing_context(invoice.subscription_external_id)
        outcome = finalize_in(uow, invoice, context, issued_at, approval=approval, actor=actor)
        uow.commit()
        return outcome


def stored_finalization(uow: UnitOfWork, invoice: Invoice) -> FinalizationOutcome:
    """The outcome of an invoice finalized or closed before: itself and its
    ``invoice.created`` deliveries (none for a closed one)."""
    return FinalizationOutcome(
        invoice=invoice, delivery_ids=uow.webhooks.delivery_ids(invoice.id, INVOICE_CREATED)
    )


def finalize_in(
    uow: UnitOfWork,
    invoice: Invoice,
    context: BillingContext,
    issued_at: datetime,
    *,
    approval: Approval | None = None,
    actor: str = SYSTEM_ACTOR,
    fees: Sequence[Fee] | None = None,
) -> FinalizationOutcome:
    """:func:`finalize_invoice` of the draft ``invoice`` (locked, or inserted, by the
    caller) inside the caller's unit of work, which commits. ``fees``: the draft's fees
    as just computed in this unit of work (the period-end step finalizing what it drafted).
    """
    invoice_id = invoice.id
    rules = context.approval_rules
    auto_approve = None if rules is None else rules.auto_approve_after_hours
    if approval is None and invoice.awaiting_approval:
        return FinalizationOutcome(
            invoice=invoice,
            delivery_ids=uow.webhooks.delivery_ids(invoice_id, INVOICE_APPROVAL_REQUIRED),
            held=True,
            auto_approve_after_hours=auto_approve,
        )
    plan = _plan(uow, invoice, context, lock=True, fees=fees)
    not_required = InvoiceApproval(status=ApprovalStatus.NOT_REQUIRED)

    if plan.closes:
        closed = uow.invoices.close(
            invoice_id,
            plan.totals,
            plan.rate,
            issued_at,
            stored_fees=invoice.fees,
            approval=not_required,
        )
        record_change(
            uow,
            "finalized",
            closed,
            TimelineKind.CLOSED,
            actor,
            "closed without a number: the invoice is empty and the customer's settings say skip",
            at=issued_at,
        )
        uow.usage.forget_receipts(invoice.subscription_external_id, invoice.period_start)
        return FinalizationOutcome(invoice=closed)

    if approval is None and plan.reasons:
        held = uow.invoices.hold_for_approval(
            invoice_id,
            InvoiceApproval(status=ApprovalStatus.REQUIRED, reasons=tuple(plan.reasons)),
        )
        record_change(
            uow,
            "approval_required",
            held,
            TimelineKind.APPROVAL_REQUIRED,
            actor,
            f"held for approval: {'; '.join(plan.reasons)} (would total "
            f"{plan.totals.total_amount_cents} cents)",
            at=issued_at,
        )
        delivery_ids = uow.webhooks.queue(held, INVOICE_APPROVAL_REQUIRED, issued_at)
        return FinalizationOutcome(
            invoice=held,
            delivery_ids=delivery_ids,
            held=True,
            auto_approve_after_hours=auto_approve,
        )

    recorded = not_required
    if approval is not None and (plan.reasons or invoice.awaiting_approval):
        held_reasons = invoice.approval.reasons if invoice.approval is not None else ()
        recorded = InvoiceApproval(
            status=ApprovalStatus.APPROVED,
            reasons=held_reasons if invoice.awaiting_approval else tuple(plan.reasons),
            approved_by=approval.approved_by,
            approved_at=issued_at,
            note=approval.note,
        )
    customer, entity = context.customer, context.billing_entity
    uow.coupons.consume(invoice_id, customer.external_id, plan.totals, issued_at)
    number = final_number(entity.invoice_prefix, uow.invoices.next_number(entity.code))
    finalized = uow.invoices.finalize(
        invoice_id,
        plan.totals,
        plan.rate,
        number,
        issued_at,
        stored_fees=invoice.fees,
        approval=recorded,
    )
    if recorded.status == ApprovalStatus.APPROVED:
        note = f": {approval.note}" if approval is not None and approval.note else ""
        record_change(
            uow,
            "approved",
            finalized,
            TimelineKind.APPROVED,
            recorded.approved_by or actor,
            f"approved{note}",
            at=issued_at,
        )
    record_change(
        uow,
        "finalized",
        finalized,
        TimelineKind.FINALIZED,
        approval.approved_by if approval is not None else actor,
        f"finalized as {number}: total {finalized.total_amount_cents} cents",
        at=issued_at,
    )
    delivery_ids = uow.webhooks.queue(finalized, INVOICE_CREATED, issued_at)
    uow.usage.forget_receipts(invoice.subscription_external_id, invoice.period_start)
    return FinalizationOutcome(invoice=finalized, delivery_ids=delivery_ids)


def preview_invoice(engine: Engine, invoice_id: str, at: datetime | None = None) -> InvoicePreview:
    """The invoice exactly as finalization would make it at ``at`` (default now).

    Raises ``InvoiceNotEditable`` for an invoice already finalized or closed (it is what
    it is: show it instead). See :func:`preview_of`.
    """
    with UnitOfWork(engine) as uow:
        invoice = uow.invoices.get(invoice_id)
        require_draft(invoice)
        context = uow.catalog.billing_context(invoice.subscription_external_id)
        return preview_of(uow, invoice, context, at=at)


def preview_of(
    uow: UnitOfWork,
    invoice: Invoice,
    context: BillingContext,
    *,
    fees: Sequence[Fee] | None = None,
    at: datetime | None = None,
) -> InvoicePreview:
    """The draft ``invoice`` as finalization would make it at ``at`` (default now), inside
    the caller's unit of work (an edit shows its preview from the same transaction).

    Nothing is written or consumed and no number is taken: ``number`` is null, ``status``
    is what finalization would give (``finalized`` or ``closed``), the grace period's end
    is null as on a finalized invoice, and ``approval`` says whether the approval rules
    would hold it. ``fees``: the draft's fees as just computed in this unit of work.
    """
    require_draft(invoice)
    plan = _plan(uow, invoice, context, lock=False, fees=fees)
    approval: InvoiceApproval | None
    if plan.reasons:
        approval = InvoiceApproval(status=ApprovalStatus.REQUIRED, reasons=tuple(plan.reasons))
    elif invoice.awaiting_approval:
        approval = invoice.approval
    else:
        approval = InvoiceApproval(status=ApprovalStatus.NOT_REQUIRED)
    values = invoice.model_dump(exclude=_PREVIEW_SETS)
    values.update(_totals_fields(plan.totals))
    return InvoicePreview(
        **values,
        fees=plan.totals.fees,
        number=None,
        status=InvoiceStatus.CLOSED if plan.closes else InvoiceStatus.FINALIZED,
        issuing_date=at or datetime.now(UTC),
        tax_rate=plan.rate,
        approval=approval,
        expected_finalization_at=None,
    )


# What the preview sets itself rather than copies from the draft (the draft's own values
# of them are not what finalization writes); the totals are replaced from the plan.
_PREVIEW_SETS = {
    "fees",
    "number",
    "status",
    "issuing_date",
    "tax_rate",
    "approval",
    "expected_finalization_at",
}


def _totals_fields(totals: Totals) -> dict[str, int]:
    return {
        "fees_amount_cents": totals.fees_amount_cents,
        "coupons_amount_cents": totals.coupons_amount_cents,
        "taxes_amount_cents": totals.taxes_amount_cents,
        "sub_total_excluding_taxes_amount_cents": totals.sub_total_excluding_taxes_amount_cents,
        "sub_total_including_taxes_amount_cents": totals.sub_total_including_taxes_amount_cents,
        "prepaid_credit_amount_cents": totals.prepaid_credit_amount_cents,
        "total_amount_cents": totals.total_amount_cents,
    }
