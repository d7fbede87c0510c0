"""How a billing period shows itself: the ``invoice`` query, UI details, search attributes.

Nothing here changes the period; each function reads its :class:`PeriodState`.
"""

from __future__ import annotations

from temporalio import workflow

from workflows import search_attributes
from workflows.inbox import Inbox
from workflows.messages import PeriodPhase, PeriodView
from workflows.period_state import PeriodState

__all__ = ["period_view", "show_details", "upsert_invoice_attributes", "upsert_period_attributes"]


def period_view(state: PeriodState, inbox: Inbox) -> PeriodView:
    """What the ``invoice`` query returns: phase, deadlines, the invoice, counters."""
    return PeriodView(
        subscription_external_id=state.input.subscription_external_id,
        customer_external_id=state.settings.customer_external_id if state.settings else "",
        period_start=state.input.period_start,
        period_end=state.input.period_end,
        phase=state.phase,
        grace_period_ends_at=state.grace_period_ends_at,
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


def show_details(state: PeriodState, inbox: Inbox) -> None:
    """Current details in the UI: a short summary of the invoice."""
    lines = [f"**{state.phase.value}** · {state.input.subscription_external_id}"]
    if state.settings is not None:
        lines.append(f"period {state.settings.period_label} ({state.settings.timezone})")
    if state.grace_period_ends_at is not None and state.phase == PeriodPhase.DRAFT:
        lines.append(f"grace period ends {state.grace_period_ends_at.isoformat()}")
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
