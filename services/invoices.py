"""Invoice operations before finalization: the draft, its refresh, the operators' fee
edits, and reading invoices.

Each function is one unit of work, idempotent on its business key (the draft on
(subscription, period start)) and records its change on the invoice timeline
(:mod:`services.timeline`). Pricing is :mod:`services.draft_fees`; finalization and its
preview are :mod:`services.finalization`; grace period deadlines are
:mod:`services.grace_periods`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine

from billing.decimals import plain_decimal
from billing.invoicing import draft_number, invoice_id_for
from billing.models import (
    AdjustedFee,
    AdjustmentMode,
    BillingContext,
    Fee,
    Invoice,
    InvoicePreview,
    InvoiceStatus,
)
from billing.plans import require_charge
from billing.timeline import SYSTEM_ACTOR, TimelineKind
from services.draft_fees import recompute_draft_fees, require_draft
from services.finalization import (
    FinalizationOutcome,
    finalize_in,
    preview_of,
    stored_finalization,
)
from services.periods import PeriodSettings, period_settings
from services.timeline import new_key, record_change, total_change
from store.unit_of_work import UnitOfWork
from store.webhooks import INVOICE_DRAFTED

__all__ = [
    "DraftChange",
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
    """The period's settings, its draft and the ``invoice.drafted`` deliveries to send;
    ``preview``: the invoice finalizing the draft now would make (None once it is not a
    draft any more); ``finalization``: what finalizing it in the same step did (asked
    for with ``finalize_when_due``, when the grace period was already over): finalized,
    closed, or held for approval (then ``preview`` is the held draft's)."""

    model_config = ConfigDict(frozen=True)

    settings: PeriodSettings
    invoice: Invoice
    delivery_ids: list[str] = []
    preview: InvoicePreview | None = None
    finalization: FinalizationOutcome | None = None


class DraftChange(BaseModel):
    """A draft after an edit, and (when asked for) the invoice finalizing it now would
    make, read in the edit's own unit of work so both show the same moment."""

    model_config = ConfigDict(frozen=True)

    invoice: Invoice
    preview: InvoicePreview | None = None


class _Edited(NamedTuple):
    draft: Invoice  # as stored after the edit
    # As computed: what finalization would start from (None: not computed by this call).
    fees: tuple[Fee, ...] | None


_Edit = Callable[[UnitOfWork, Invoice, BillingContext], _Edited]


def _insert_draft(
    uow: UnitOfWork,
    invoice_id: str,
    context: BillingContext,
    period_start: datetime,
    period_end: datetime,
    drafted_at: datetime | None,
    grace_period_seconds: int | None,
) -> _Edited:
    """Insert the draft with its grace period and its first fees, and record it; the
    stored invoice (and its fees as stored) when another attempt inserted it first."""
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
    if inserted is None:  # created concurrently by another attempt: its fees are its own
        stored = uow.invoices.get(invoice_id)
        return _Edited(stored, None)
    draft, fees = recompute_draft_fees(uow, inserted, context, adjustments={})  # no edits yet
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
    return _Edited(draft, fees)


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
        return draft.draft


def draft_invoice(
    engine: Engine,
    subscription_external_id: str,
    period_start: datetime,
    period_end: datetime,
    *,
    drafted_at: datetime | None = None,
    grace_period_seconds: int | None = None,
    finalize_when_due: bool = False,
) -> DraftOutcome:
    """The period-end step in one unit of work: settings, draft, ``invoice.drafted`` rows.

    Idempotent on (subscription, period start): a repeat returns the stored draft (or the
    invoice it became) and the deliveries already queued. The grace period as in
    :func:`create_draft`. The outcome's ``preview`` comes from the same unit of work.

    ``finalize_when_due``: when the grace period is already over at ``drafted_at`` (a
    grace period of zero), finalize, close or hold the draft in the same unit of work
    (``finalization``, as :func:`services.finalization.finalize_invoice` would at
    ``drafted_at``); an invoice finalized or closed before comes back with its outcome.
    """
    invoice_id = invoice_id_for(subscription_external_id, period_start)
    drafted_at = drafted_at or datetime.now(UTC)
    with UnitOfWork(engine) as uow:
        context = uow.catalog.billing_context(subscription_external_id)
        settings = period_settings(context, period_start, period_end)
        invoice = uow.invoices.find(invoice_id)
        fees = None  # the fees just computed, when this call inserts the draft
        if invoice is None:
            invoice, fees = _insert_draft(
                uow, invoice_id, context, period_start, period_end, drafted_at, grace_period_seconds
            )
        if fees is None and finalize_when_due and invoice.status == InvoiceStatus.DRAFT:
            invoice = uow.invoices.lock(invoice_id)  # not inserted here: lock it as finalizing does
        delivery_ids: list[str] = []
        if context.billing_entity.send_invoice_drafted_webhook:
            delivery_ids = uow.webhooks.delivery_ids(invoice_id, INVOICE_DRAFTED)
            if not delivery_ids and invoice.status == InvoiceStatus.DRAFT:
                delivery_ids = uow.webhooks.queue(invoice, INVOICE_DRAFTED, datetime.now(UTC))
        finalization = None
        if finalize_when_due and invoice.status != InvoiceStatus.DRAFT:
            finalization = stored_finalization(uow, invoice)
        elif finalize_when_due and _grace_period_over(invoice, drafted_at):
            finalization = finalize_in(uow, invoice, context, drafted_at, fees=fees)
        preview = None
        if finalization is None and invoice.status == InvoiceStatus.DRAFT:
            preview = preview_of(uow, invoice, context, fees=fees)
        elif finalization is not None and finalization.held:  # still a draft, waiting
            preview = preview_of(uow, finalization.invoice, context)
        uow.commit()
        return DraftOutcome(
            settings=settings,
            invoice=invoice,
            delivery_ids=delivery_ids,
            preview=preview,
            finalization=finalization,
        )


def _grace_period_over(invoice: Invoice, at: datetime) -> bool:
    ends_at = invoice.expected_finalization_at
    return ends_at is not None and ends_at <= at


def _edit_draft(engine: Engine, invoice_id: str, edit: _Edit, *, preview: bool) -> DraftChange:
    """Lock the draft, apply ``edit`` (which records its timeline entry), and with
    ``preview`` price the finalization of the result, all in one unit of work."""
    with UnitOfWork(engine) as uow:
        invoice = uow.invoices.lock(invoice_id)
        require_draft(invoice)
        context = uow.catalog.billing_context(invoice.subscription_external_id)
        edited = edit(uow, invoice, context)
        shown = preview_of(uow, edited.draft, context, fees=edited.fees) if preview else None
        uow.commit()
        return DraftChange(invoice=edited.draft, preview=shown)


def _refresh(key: str | None, actor: str) -> _Edit:
    def edit(uow: UnitOfWork, invoice: Invoice, context: BillingContext) -> _Edited:
        refreshed, fees = recompute_draft_fees(uow, invoice, context)
        if refreshed.fees != invoice.fees:  # a refresh that changes nothing is no event
            record_change(
                uow,
                key or new_key(),
                refreshed,
                TimelineKind.REFRESHED,
                actor,
                f"fees recomputed from the period's usage: {total_change(invoice, refreshed)}",
            )
        return _Edited(refreshed, fees)

    return edit


def _adjust(adjustment: AdjustedFee, key: str | None, actor: str) -> _Edit:
    def edit(uow: UnitOfWork, invoice: Invoice, context: BillingContext) -> _Edited:
        require_charge(adjustment.charge_code, context.charge_codes)
        uow.invoices.save_adjustment(invoice.id, adjustment)
        adjusted, fees = recompute_draft_fees(uow, invoice, context)
        record_change(
            uow,
            key or new_key(),
            adjusted,
            TimelineKind.FEE_ADJUSTED,
            actor,
            f"fee of {adjustment.charge_code} {_adjustment_text(adjustment)}: "
            f"{total_change(invoice, adjusted)}",
        )
        return _Edited(adjusted, fees)

    return edit


def _remove_adjustment(charge_code: str, key: str | None, actor: str) -> _Edit:
    def edit(uow: UnitOfWork, invoice: Invoice, context: BillingContext) -> _Edited:
        removed = uow.invoices.delete_adjustment(invoice.id, charge_code)
        restored, fees = recompute_draft_fees(uow, invoice, context)
        if removed:  # removing an edit that is not there (a repeat) records nothing
            record_change(
                uow,
                key or new_key(),
                restored,
                TimelineKind.FEE_ADJUSTMENT_REMOVED,
                actor,
                f"adjustment of {charge_code} removed, the computed fee is back: "
                f"{total_change(invoice, restored)}",
            )
        return _Edited(restored, fees)

    return edit


def _adjustment_text(adjustment: AdjustedFee) -> str:
    if adjustment.mode == AdjustmentMode.UNITS:
        return f"set to {plain_decimal(adjustment.units or Decimal(0))} units"
    if adjustment.mode == AdjustmentMode.AMOUNT:
        return (
            f"set to {plain_decimal(adjustment.units or Decimal(0))} units at "
            f"{plain_decimal(adjustment.unit_amount or Decimal(0))} each"
        )
    return f"renamed to {adjustment.display_name!r}"


def refresh_draft(
    engine: Engine,
    invoice_id: str,
    *,
    key: str | None = None,
    actor: str = SYSTEM_ACTOR,
    preview: bool = False,
) -> DraftChange:
    """Recompute every fee of a draft from its events and adjustments.

    ``key``: the timeline key of this change (a workflow step's, stable across its
    retries; default a new one); recorded only when the fees changed. ``preview``: also
    price the finalization of the result, in the same unit of work.
    """
    return _edit_draft(engine, invoice_id, _refresh(key, actor), preview=preview)


def adjust_fee(
    engine: Engine,
    invoice_id: str,
    adjustment: AdjustedFee,
    *,
    key: str | None = None,
    actor: str = SYSTEM_ACTOR,
    preview: bool = False,
) -> DraftChange:
    """Store an operator's fee edit (replacing an earlier one) and recompute the draft;
    ``key`` and ``preview`` as in :func:`refresh_draft`."""
    return _edit_draft(engine, invoice_id, _adjust(adjustment, key, actor), preview=preview)


def remove_fee_adjustment(
    engine: Engine,
    invoice_id: str,
    charge_code: str,
    *,
    key: str | None = None,
    actor: str = SYSTEM_ACTOR,
    preview: bool = False,
) -> DraftChange:
    """Drop an operator's edit: the computed fee comes back. Idempotent (a removal of
    nothing records nothing); ``key`` and ``preview`` as in :func:`refresh_draft`."""
    edit = _remove_adjustment(charge_code, key, actor)
    return _edit_draft(engine, invoice_id, edit, preview=preview)


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


_STATUSES_PER_STATEMENT = 500


def period_statuses(
    engine: Engine, periods: Iterable[tuple[str, datetime]]
) -> dict[tuple[str, datetime], InvoiceStatus]:
    """The status of each (subscription, period start)'s invoice, for the periods that have
    one: what a bulk start or a usage import checks before it sends anything, in one
    statement per 500 subscriptions (each with every listed period start) instead of one
    invoice read per period."""
    wanted = set(periods)
    found: dict[tuple[str, datetime], InvoiceStatus] = {}
    subscriptions = sorted({subscription for subscription, _ in wanted})
    starts = list({start for _, start in wanted})
    with UnitOfWork(engine) as uow:
        for i in range(0, len(subscriptions), _STATUSES_PER_STATEMENT):
            chunk = subscriptions[i : i + _STATUSES_PER_STATEMENT]
            for key, status in uow.invoices.statuses(chunk, starts).items():
                if key in wanted:  # another listed period's start, for this subscription
                    found[key] = status
    return found


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
