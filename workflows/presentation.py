"""How a billing period shows itself: the ``invoice`` query, UI details, search attributes.

Nothing here changes the period; each function reads its :class:`PeriodState`.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

from workflows import search_attributes
from workflows.inbox import Inbox
from workflows.messages import PeriodPhase, PeriodView
from workflows.period_state import PeriodState

__all__ = [
    "customer_external_id",
    "period_view",
    "show_details",
    "upsert_changed_attributes",
    "upsert_invoice_attributes",
    "upsert_missing_period_attributes",
    "upsert_period_attributes",
]


def customer_external_id(state: PeriodState) -> str:
    """The customer: from the settings once read, else from the start input (may be empty)."""
    if state.settings is not None:
        return state.settings.customer_external_id
    return state.input.customer_external_id


def period_view(state: PeriodState, inbox: Inbox) -> PeriodView:
    """What the ``invoice`` query returns: phase, deadlines, the invoice, counters."""
    return PeriodView(
        subscription_external_id=state.input.subscription_external_id,
        customer_external_id=customer_external_id(state),
        period_start=state.input.period_start,
        period_end=state.input.period_end,
        phase=state.phase,
        grace_period_ends_at=state.grace_period_ends_at,
        auto_approve_at=state.auto_approve_at,
        invoice=state.invoice,
        events_accepted=state.events_accepted,
        events_duplicated=state.events_duplicated,
        inputs_rejected=inbox.inputs_rejected,
        webhooks_delivered=state.webhooks_delivered,
        webhooks_failed=state.webhooks_failed,
    )


def upsert_period_attributes(state: PeriodState) -> None:
    """The attributes an operator finds a period by, set once its settings are read."""
    assert state.settings is not None
    workflow.upsert_search_attributes(
        [
            search_attributes.CUSTOMER.value_set(state.settings.customer_external_id),
            search_attributes.SUBSCRIPTION.value_set(state.input.subscription_external_id),
            search_attributes.PERIOD_START.value_set(state.input.period_start),
            search_attributes.INVOICE_STATUS.value_set(state.phase.value),
        ]
    )


def upsert_invoice_attributes(state: PeriodState) -> None:
    """Status, number and total of the invoice, once there is one."""
    if state.invoice is None:
        return
    workflow.upsert_search_attributes(
        [
            search_attributes.INVOICE_STATUS.value_set(state.phase.value),
            search_attributes.INVOICE_NUMBER.value_set(state.invoice.number),
            search_attributes.TOTAL_CENTS.value_set(state.invoice.total_amount_cents),
        ]
    )


def upsert_missing_period_attributes(state: PeriodState) -> None:
    """A period started without its attributes (by an older starter) gets them once."""
    if workflow.info().typed_search_attributes.get(search_attributes.SUBSCRIPTION) is not None:
        return
    pairs: list[SearchAttributeUpdate[Any]] = [
        search_attributes.SUBSCRIPTION.value_set(state.input.subscription_external_id),
        search_attributes.PERIOD_START.value_set(state.input.period_start),
        search_attributes.INVOICE_STATUS.value_set(state.phase.value),
    ]
    customer = customer_external_id(state)
    if customer:
        pairs.append(search_attributes.CUSTOMER.value_set(customer))
    workflow.upsert_search_attributes(pairs)


def upsert_changed_attributes(state: PeriodState) -> None:
    """Status, number and total (and the customer, if not given at start) that changed.

    Compared with the workflow's current attributes, so an edit or refresh that leaves the
    total as it was upserts nothing.
    """
    invoice = state.invoice
    if invoice is None:
        return
    current = workflow.info().typed_search_attributes
    pairs: list[SearchAttributeUpdate[Any]] = []
    customer = customer_external_id(state)
    if customer and current.get(search_attributes.CUSTOMER) != customer:
        pairs.append(search_attributes.CUSTOMER.value_set(customer))
    if current.get(search_attributes.INVOICE_STATUS) != state.phase.value:
        pairs.append(search_attributes.INVOICE_STATUS.value_set(state.phase.value))
    if current.get(search_attributes.INVOICE_NUMBER) != invoice.number:
        pairs.append(search_attributes.INVOICE_NUMBER.value_set(invoice.number))
    if current.get(search_attributes.TOTAL_CENTS) != invoice.total_amount_cents:
        pairs.append(search_attributes.TOTAL_CENTS.value_set(invoice.total_amount_cents))
    if pairs:
        workflow.upsert_search_attributes(pairs)


def show_details(state: PeriodState, inbox: Inbox) -> None:
    """Current details in the UI: a short summary of the invoice."""
    lines = [f"**{state.phase.value}** · {state.input.subscription_external_id}"]
    if state.settings is not None:
        lines.append(f"period {state.settings.period_label} ({state.settings.timezone})")
    if state.grace_period_ends_at is not None and state.phase == PeriodPhase.DRAFT:
        lines.append(f"grace period ends {state.grace_period_ends_at.isoformat()}")
    if state.phase == PeriodPhase.AWAITING_APPROVAL and state.invoice is not None:
        approval = state.invoice.approval
        reasons = "; ".join(approval.reasons) if approval is not None else ""
        lines.append(f"held for approval: {reasons}")
        if state.auto_approve_at is not None:
            lines.append(f"approves itself at {state.auto_approve_at.isoformat()}")
    invoice = state.invoice
    if invoice is not None:
        lines.append(
            f"{invoice.number}: fees {invoice.fees_amount_cents} · coupons "
            f"{invoice.coupons_amount_cents} · taxes {invoice.taxes_amount_cents} · "
            f"credits {invoice.prepaid_credit_amount_cents} · total "
            f"{invoice.total_amount_cents} {invoice.currency} (cents)"
        )
        for fee in invoice.fees:
            mark = " (adjusted)" if fee.adjusted else ""
            lines.append(f"- {fee.display_name}: {fee.units} units, {fee.amount_cents}{mark}")
    lines.append(
        f"events accepted {state.events_accepted}, duplicates {state.events_duplicated}, "
        f"inputs rejected {inbox.inputs_rejected}"
    )
    workflow.set_current_details("\n".join(lines))
