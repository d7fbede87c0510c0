"""Invoice operations: draft, refresh, fee adjustments, finalize or close.

Each function is one unit of work, idempotent on its business key: the draft on
(subscription, period start), the finalization on the invoice (a second call returns the
stored outcome and consumes nothing). Pricing is :func:`billing.fees.compute_fees`; the
totals, the empty-invoice rule and the numbering are in :mod:`billing.invoicing`.

Finalization (:func:`finalize_invoice`), in one transaction: lock the invoice, recompute
its fees, then either close it (``billing.invoicing.should_close``: empty, and the
customer's setting says skip; no number, no webhook, nothing consumed), or hold it for
approval (``billing.approval``: a rule matches and nobody approved it; it stays a draft
and an ``invoice.approval_required`` webhook is queued), or apply coupons, taxes and
prepaid credits, take the next number of the billing entity's gapless sequence and write
the ``invoice.created`` outbox rows. :func:`preview_invoice` runs the same plan without
writing anything.

Every change writes its invoice timeline entry (``billing.timeline``) in the same unit of
work, under a key: a natural one where the change happens once (the draft, the
finalization), else the caller's (a workflow step's id, stable across its retries).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine

from billing.approval import ApprovalStatus, InvoiceApproval, approval_reasons
from billing.errors import InvoiceNotEditable
from billing.fees import compute_fees
from billing.invoicing import (
    Totals,
    draft_number,
    draft_totals,
    final_number,
    finalization_totals,
    invoice_id_for,
    should_close,
    tax_rate,
)
from billing.models import (
    AdjustedFee,
    BillingContext,
    Fee,
    Invoice,
    InvoicePreview,
    InvoiceStatus,
)
from billing.plans import require_charge
from billing.timeline import SYSTEM_ACTOR, TimelineEntry, TimelineKind
from services.periods import PeriodSettings, period_settings
from store.unit_of_work import UnitOfWork
from store.webhooks import INVOICE_APPROVAL_REQUIRED, INVOICE_CREATED, INVOICE_DRAFTED

__all__ = [
    "Approval",
    "DraftOutcome",
    "DraftToFollow",
    "FinalizationOutcome",
    "adjust_fee",
    "create_draft",
    "draft_invoice",
    "drafts_to_follow_settings",
    "finalize_invoice",
    "find_invoice",
    "get_invoice",
    "invoice_timeline",
    "list_adjustments",
    "list_invoices",
    "preview_invoice",
    "queue_drafted_webhook",
    "recompute_grace_period",
    "refresh_draft",
    "remove_fee_adjustment",
]

DAY = timedelta(days=1)


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


class DraftToFollow(NamedTuple):
    """A running draft whose grace period no longer matches its settings."""

    invoice_id: str
    subscription_external_id: str
    period_start: datetime
    expected_finalization_at: datetime | None
    follows_at: datetime  # drafted_at + the grace period the settings now give


class _Plan(NamedTuple):
    """What finalizing a draft right now would do (nothing written yet)."""

    closes: bool
    totals: Totals
    rate: Decimal
    reasons: list[str]  # approval rules that match; empty when it closes


class DraftOutcome(BaseModel):
    """The period's settings, its draft and the ``invoice.drafted`` deliveries to send."""

    model_config = ConfigDict(frozen=True)

    settings: PeriodSettings
    invoice: Invoice
    delivery_ids: list[str] = []


def _new_key() -> str:
    """A key for a change asked without one (a direct call, not a retried step)."""
    return str(uuid.uuid4())


def _record(
    uow: UnitOfWork,
    key: str,
    invoice: Invoice,
    kind: TimelineKind,
    actor: str,
    summary: str,
    at: datetime | None = None,
) -> None:
    uow.timeline.record(
        f"{invoice.id}/{key}",
        invoice.id,
        kind,
        at=at or datetime.now(UTC),
        actor=actor,
        summary=summary,
        total_amount_cents=invoice.total_amount_cents,
    )


def _total_change(before: Invoice, after: Invoice) -> str:
    if before.total_amount_cents == after.total_amount_cents:
        return f"total unchanged at {after.total_amount_cents} cents"
    return f"total {before.total_amount_cents} -> {after.total_amount_cents} cents"


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
    draft = _recompute_draft(uow, inserted, context, adjustments={})  # no edits yet
    _record(
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


def _plan(uow: UnitOfWork, invoice: Invoice, context: BillingContext, *, lock: bool) -> _Plan:
    """What finalizing ``invoice`` now would do; ``lock``: coupons and wallet until commit."""
    customer, entity = context.customer, context.billing_entity
    fees = _fees(uow, context, invoice)
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


def _is_held(invoice: Invoice) -> bool:
    return invoice.approval is not None and invoice.approval.status == ApprovalStatus.REQUIRED


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
            return FinalizationOutcome(
                invoice=invoice,
                delivery_ids=uow.webhooks.delivery_ids(invoice_id, INVOICE_CREATED),
            )
        context = uow.catalog.billing_context(invoice.subscription_external_id)
        rules = context.approval_rules
        auto_approve = None if rules is None else rules.auto_approve_after_hours
        if approval is None and _is_held(invoice):
            return FinalizationOutcome(
                invoice=invoice,
                delivery_ids=uow.webhooks.delivery_ids(invoice_id, INVOICE_APPROVAL_REQUIRED),
                held=True,
                auto_approve_after_hours=auto_approve,
            )
        plan = _plan(uow, invoice, context, lock=True)
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
            _record(
                uow,
                "finalized",
                closed,
                TimelineKind.CLOSED,
                actor,
                "closed without a number: the invoice is empty and the customer's settings "
                "say skip",
                at=issued_at,
            )
            uow.commit()
            return FinalizationOutcome(invoice=closed)

        if approval is None and plan.reasons:
            held = uow.invoices.hold_for_approval(
                invoice_id,
                InvoiceApproval(status=ApprovalStatus.REQUIRED, reasons=tuple(plan.reasons)),
            )
            _record(
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
            uow.commit()
            return FinalizationOutcome(
                invoice=held,
                delivery_ids=delivery_ids,
                held=True,
                auto_approve_after_hours=auto_approve,
            )

        recorded = not_required
        if approval is not None and (plan.reasons or _is_held(invoice)):
            held_reasons = invoice.approval.reasons if invoice.approval is not None else ()
            recorded = InvoiceApproval(
                status=ApprovalStatus.APPROVED,
                reasons=held_reasons if _is_held(invoice) else tuple(plan.reasons),
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
            _record(
                uow,
                "approved",
                finalized,
                TimelineKind.APPROVED,
                recorded.approved_by or actor,
                f"approved{note}",
                at=issued_at,
            )
        _record(
            uow,
            "finalized",
            finalized,
            TimelineKind.FINALIZED,
            approval.approved_by if approval is not None else actor,
            f"finalized as {number}: total {finalized.total_amount_cents} cents",
            at=issued_at,
        )
        delivery_ids = uow.webhooks.queue(finalized, INVOICE_CREATED, issued_at)
        uow.commit()
        return FinalizationOutcome(invoice=finalized, delivery_ids=delivery_ids)


def preview_invoice(engine: Engine, invoice_id: str, at: datetime | None = None) -> InvoicePreview:
    """The invoice exactly as finalization would make it at ``at`` (default now).

    Nothing is written or consumed and no number is taken: ``number`` is null, ``status``
    is what finalization would give (``finalized`` or ``closed``), and ``approval`` says
    whether the approval rules would hold it. Raises ``InvoiceNotEditable`` for an invoice
    already finalized or closed (it is what it is: show it instead).
    """
    with UnitOfWork(engine) as uow:
        invoice = uow.invoices.get(invoice_id)
        _require_draft(invoice)
        context = uow.catalog.billing_context(invoice.subscription_external_id)
        plan = _plan(uow, invoice, context, lock=False)
    approval: InvoiceApproval | None
    if plan.reasons:
        approval = InvoiceApproval(status=ApprovalStatus.REQUIRED, reasons=tuple(plan.reasons))
    elif _is_held(invoice):
        approval = invoice.approval
    else:
        approval = InvoiceApproval(status=ApprovalStatus.NOT_REQUIRED)
    values = invoice.model_dump(exclude={"fees", "number", "status", "approval"})
    values.update(_totals_fields(plan.totals))
    return InvoicePreview(
        **values,
        fees=plan.totals.fees,
        number=None,
        status=InvoiceStatus.CLOSED if plan.closes else InvoiceStatus.FINALIZED,
        issuing_date=at or datetime.now(UTC),
        tax_rate=plan.rate,
        approval=approval,
    )


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


def recompute_grace_period(
    engine: Engine,
    invoice_id: str,
    *,
    key: str | None = None,
    actor: str = SYSTEM_ACTOR,
) -> Invoice:
    """Move a draft's deadline to (moment drafted + the grace period its settings give now).

    Nothing changes for an invoice that is no longer a plain draft (held, finalized,
    closed), or whose grace period the period itself fixed; an unchanged deadline
    records nothing. The caller compares the returned ``expected_finalization_at`` with
    its clock: a deadline in the past means finalize now.
    """
    with UnitOfWork(engine) as uow:
        invoice = uow.invoices.lock(invoice_id)
        if invoice.status != InvoiceStatus.DRAFT or _is_held(invoice):
            return invoice
        drafted_at, fixed = uow.invoices.grace_period_start(invoice_id)
        if drafted_at is None or fixed:
            return invoice
        context = uow.catalog.billing_context(invoice.subscription_external_id)
        deadline = drafted_at + context.grace_period_days * DAY
        if deadline == invoice.expected_finalization_at:
            return invoice
        moved = uow.invoices.set_deadline(invoice_id, deadline)
        was = invoice.expected_finalization_at
        _record(
            uow,
            key or _new_key(),
            moved,
            TimelineKind.GRACE_PERIOD_CHANGED,
            actor,
            f"grace period is now {context.grace_period_days} days: it ends at "
            f"{deadline.isoformat()} (was {was.isoformat() if was else 'unknown'})",
        )
        uow.commit()
        return moved


def drafts_to_follow_settings(engine: Engine) -> list[DraftToFollow]:
    """Running drafts whose deadline differs from what their settings now give.

    Held, fixed (the period set its own grace period) and pre-release drafts (no
    ``drafted_at``) are left out. Running it again after the drafts followed finds none.
    """
    with UnitOfWork(engine) as uow:
        return [
            DraftToFollow(
                invoice_id=row.invoice_id,
                subscription_external_id=row.subscription_external_id,
                period_start=row.period_start,
                expected_finalization_at=row.expected_finalization_at,
                follows_at=row.drafted_at + row.grace_period_days * DAY,
            )
            for row in uow.invoices.running_drafts_with_grace_periods()
            if row.expected_finalization_at != row.drafted_at + row.grace_period_days * DAY
        ]


def invoice_timeline(engine: Engine, invoice_id: str) -> list[TimelineEntry]:
    """Every recorded change of the invoice, in order."""
    with UnitOfWork(engine) as uow:
        return uow.timeline.entries(invoice_id)


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
