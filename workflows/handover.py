"""The hand-over of a billing period from one workflow run to the next (continue-as-new).

A period lives for weeks and may receive many thousands of inputs, more than one run's
history should hold. When Temporal suggests it, or a run has taken
``max_signals_per_run`` signals or :data:`MAX_UPDATES_PER_RUN` updates, the run works off
every accepted input (:func:`drained`), then continues as new with a
:class:`CarriedState` in its input; the next run resumes from it (:func:`resume`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import NoReturn

from pydantic import BaseModel
from temporalio import workflow

from activities.invoices import PeriodSettings
from billing.models import Invoice, InvoicePreview
from workflows.inbox import Inbox, StoreCall
from workflows.messages import BillingPeriodInput, PeriodPhase, RejectedInput
from workflows.period_state import PeriodState

__all__ = [
    "MAX_UPDATES_PER_RUN",
    "CarriedState",
    "continue_as_new",
    "drained",
    "resume",
    "should_continue_as_new",
]

MAX_UPDATES_PER_RUN = 1500  # Temporal allows 2,000 updates per run


class CarriedState(BaseModel):
    """What a period carries over to its next run when it continues as new."""

    phase: PeriodPhase
    settings: PeriodSettings | None = None
    invoice: Invoice | None = None
    grace_period_ends_at: datetime | None = None
    refresh_due_at: datetime | None = None
    finalize_requested: bool = False
    finalize_requested_by: str | None = None
    approval_requested: bool = False
    approved_by: str | None = None
    approval_note: str | None = None
    auto_approve_at: datetime | None = None
    preview: InvoicePreview | None = None
    events_accepted: int = 0
    events_duplicated: int = 0
    inputs_rejected: int = 0
    rejections: list[RejectedInput] = []
    sequence: int = 0


def resume(input: BillingPeriodInput) -> tuple[PeriodState, Inbox]:
    """The state handed over by the previous run, or a fresh open period."""
    if input.carried_state is None:
        return PeriodState(input), Inbox(input.subscription_external_id)
    carried = CarriedState.model_validate(input.carried_state)
    state = PeriodState(
        input,
        phase=carried.phase,
        settings=carried.settings,
        invoice=carried.invoice,
        grace_period_ends_at=carried.grace_period_ends_at,
        refresh_due_at=carried.refresh_due_at,
        finalize_requested=carried.finalize_requested,
        finalize_requested_by=carried.finalize_requested_by,
        approval_requested=carried.approval_requested,
        approved_by=carried.approved_by,
        approval_note=carried.approval_note,
        auto_approve_at=carried.auto_approve_at,
        events_accepted=carried.events_accepted,
        events_duplicated=carried.events_duplicated,
    )
    state.preview = carried.preview
    inbox = Inbox(
        input.subscription_external_id,
        invoice_id=carried.invoice.id if carried.invoice is not None else None,
        rejections=carried.rejections,
        inputs_rejected=carried.inputs_rejected,
        sequence=carried.sequence,
    )
    return state, inbox


def should_continue_as_new(state: PeriodState, inbox: Inbox) -> bool:
    """Whether this run's history is long enough to hand over to a new run."""
    return (
        workflow.info().is_continue_as_new_suggested()
        or inbox.signals_this_run >= state.input.max_signals_per_run
        or inbox.updates_this_run >= MAX_UPDATES_PER_RUN
    )


async def drained(
    state: PeriodState,
    inbox: Inbox,
    apply_queued: Callable[[], Awaitable[None]],
    store: StoreCall,
) -> bool:
    """Apply every accepted input before continuing as new.

    False when a finalize request or an approval arrived meanwhile: finalizing comes first.
    """
    while True:
        await apply_queued()
        await workflow.wait_condition(
            lambda: (
                workflow.all_handlers_finished() or bool(inbox.queue) or state.wants_to_finalize()
            )
        )
        if state.wants_to_finalize():
            return False
        if not inbox.queue:
            await inbox.store_rejections(store)
            return workflow.all_handlers_finished() and not inbox.queue


def continue_as_new(state: PeriodState, inbox: Inbox) -> NoReturn:
    """End this run; the next one starts with the same input and the carried state."""
    carried = CarriedState(
        phase=state.phase,
        settings=state.settings,
        invoice=state.invoice,
        grace_period_ends_at=state.grace_period_ends_at,
        refresh_due_at=state.refresh_due_at,
        finalize_requested=state.finalize_requested,
        finalize_requested_by=state.finalize_requested_by,
        approval_requested=state.approval_requested,
        approved_by=state.approved_by,
        approval_note=state.approval_note,
        auto_approve_at=state.auto_approve_at,
        preview=state.preview,
        events_accepted=state.events_accepted,
        events_duplicated=state.events_duplicated,
        inputs_rejected=inbox.inputs_rejected,
        rejections=list(inbox.rejections),
        sequence=inbox.sequence,
    )
    workflow.continue_as_new(
        state.input.model_copy(update={"carried_state": carried.model_dump(mode="json")})
    )
