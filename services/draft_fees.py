"""The fees of a draft: computed from its period's usage and the operators' edits
(:func:`billing.fees.compute_fees`), and stored with the draft's totals."""

from __future__ import annotations

from billing.errors import InvoiceNotEditable
from billing.fees import compute_fees
from billing.invoicing import draft_totals, tax_rate
from billing.models import AdjustedFee, BillingContext, Fee, Invoice, InvoiceStatus
from store.unit_of_work import UnitOfWork

__all__ = ["draft_fees", "recompute_draft", "recompute_draft_fees", "require_draft"]


def require_draft(invoice: Invoice) -> None:
    if invoice.status != InvoiceStatus.DRAFT:
        raise InvoiceNotEditable(invoice.number or invoice.id, invoice.status.value)


def draft_fees(
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


def recompute_draft_fees(
    uow: UnitOfWork,
    invoice: Invoice,
    context: BillingContext,
    adjustments: dict[str, AdjustedFee] | None = None,
) -> tuple[Invoice, tuple[Fee, ...]]:
    """Recompute a draft's fees and totals, and store them (``invoice`` as read in this
    unit of work: its fees are rewritten only when they changed).

    Returns the stored draft and the fees as computed, so a preview in the same unit of
    work prices exactly what finalization would, without computing them again.
    """
    fees = draft_fees(uow, context, invoice, adjustments)
    rate = tax_rate(context.customer, context.billing_entity)
    stored = uow.invoices.save_draft(
        invoice.id, draft_totals(fees, rate, context.currency), rate, stored_fees=invoice.fees
    )
    return stored, fees


def recompute_draft(
    uow: UnitOfWork,
    invoice: Invoice,
    context: BillingContext,
    adjustments: dict[str, AdjustedFee] | None = None,
) -> Invoice:
    """:func:`recompute_draft_fees`, for callers that need only the stored draft."""
    return recompute_draft_fees(uow, invoice, context, adjustments)[0]
