"""One billing period of one subscription, from open usage to the final invoice.

1. **open**: until the period ends, usage batches are recorded in the store.
2. **draft**: at period end the draft invoice is created; during the grace period (a
   durable timer from the draft's creation) late usage, fee edits and refreshes apply;
   usage refreshes the draft, debounced so a burst costs one refresh.
3. **finalizing**: when the grace period ends or someone asks to finalize now (or
   approves), one store step finalizes the invoice (coupons, taxes, credits, number,
   outbox), closes it (empty, and the customer's settings say skip) or holds it (an
   approval rule matches); with a grace period of zero the draft's own step does it.
4. **awaiting approval** (held): the draft still takes usage, edits and refreshes until
   someone approves it or the auto-approval time passes; then it is finalized.
5. **finalized / closed**: the ``invoice.created`` webhook is delivered (never for a
   closed invoice); every later change is refused; the workflow returns the invoice.

Store steps and an operator's edits are local activities; the refresh after late usage,
the rejections' record and the webhook are regular ones (``workflows.store_steps``).
Passed through the sandbox beside it: ``phases`` (what each phase accepts), ``inbox``
(signals, updates, refusals), ``commands`` (how each input changes the period),
``presentation`` (query, UI, search attributes), ``handover`` (continue-as-new) and
``versions`` (the patches: which shape a run follows).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RawValue

with workflow.unsafe.imports_passed_through():
    from activities.invoices import (
        CreateDraftRequest,
        DraftOutcome,
        DraftRequest,
        FinalizationOutcome,
        FinalizeRequest,
        FinalizeResult,
        InvoiceActivities,
        InvoiceRef,
        PeriodSettingsRequest,
    )
    from billing.models import Invoice, InvoicePreview, InvoiceStatus, UsageReceipt
    from workflows import handover, phases, presentation, versions
    from workflows.commands import PeriodCommands
    from workflows.messages import (
        AddUsage,
        ApproveInvoice,
        BillingPeriodInput,
        EditFee,
        FinalizeInvoice,
        PeriodPhase,
        PeriodView,
        RecomputeGracePeriod,
        RefreshInvoice,
        RejectedInput,
        RemoveFeeAdjustment,
    )
    from workflows.period_state import PeriodState
    from workflows.store_steps import store_step
    from workflows.webhook_delivery import deliver_in_turn, start_deliveries

__all__ = ["BillingPeriodWorkflow"]

# The phases an approval ends at once (in ``finalizing`` it waits for the outcome).
_APPROVABLE = (PeriodPhase.DRAFT, PeriodPhase.AWAITING_APPROVAL, PeriodPhase.FINALIZING)

DAY = timedelta(days=1)


@workflow.defn
class BillingPeriodWorkflow:
    @workflow.init
    def __init__(self, input: BillingPeriodInput) -> None:
        self._state, self._inbox = handover.resume(input)
        self._pending_deliveries: list[str] = []
        self._store_promptly = False
        self._commands = PeriodCommands(self._state, self._inbox, store_step)

    # ------------------------------------------------------------------ the story

    @workflow.run
    async def run(self, input: BillingPeriodInput) -> Invoice:
        # First thing: a run begun before a patch keeps its shape to its end.
        state = versions.consult(self._state)
        if state.lean_shape:
            presentation.upsert_missing_period_attributes(state)
        elif state.settings is None:
            state.settings = await store_step(
                InvoiceActivities.load_period_settings,
                PeriodSettingsRequest(
                    subscription_external_id=input.subscription_external_id,
                    period_start=input.period_start,
                    period_end=input.period_end,
                ),
                summary="load customer settings",
            )
            presentation.upsert_period_attributes(state)
        self._show_details()

        if state.phase == PeriodPhase.OPEN:
            if not await self._work_until(lambda: input.period_end):
                handover.continue_as_new(state, self._inbox)
            await self._create_draft()  # a grace period of zero: finalized, closed or held

        if state.phase == PeriodPhase.DRAFT:
            if not await self._work_until(self._grace_deadline):
                handover.continue_as_new(state, self._inbox)
            await self._finalize()

        if state.phase == PeriodPhase.AWAITING_APPROVAL:
            if not await self._work_until(lambda: state.auto_approve_at):
                handover.continue_as_new(state, self._inbox)
            await self._finalize()

        await deliver_in_turn(
            self._pending_deliveries, input.webhook_retry_window_seconds, self._count_delivery
        )
        await self._inbox.refuse_remaining(self._commands.check_allowed, store_step)
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._inbox.store_rejections(store_step)
        assert state.invoice is not None
        return state.invoice

    async def _work_until(self, deadline: Callable[[], datetime | None]) -> bool:
        """Apply queued commands until ``deadline()`` passes (None: no deadline) or someone
        asks to end the wait (finalize-now, approval).

        Returns False when this run should hand over to a new run (history bound).
        """
        state, inbox = self._state, self._inbox
        while True:
            await self._commands.apply_queued()
            await self._commands.refresh_when_due()
            ends_at = deadline()
            if ends_at is not None and self._inputs_received_before(ends_at):
                continue
            now = workflow.now()
            if (ends_at is not None and now >= ends_at) or state.wants_to_finalize():
                return True
            if handover.should_continue_as_new(state, inbox) and await handover.drained(
                state, inbox, self._commands.apply_queued, store_step
            ):
                return False
            wake_at = ends_at
            if state.refresh_due_at is not None:
                wake_at = min(wake_at or state.refresh_due_at, state.refresh_due_at)
            # Without this patch the loop woke only for commands (docs/UPGRADES.md).
            self._store_promptly = self._state.lean_shape or workflow.patched(
                versions.PATCH_STORE_REJECTIONS_PROMPTLY
            )
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: (
                        bool(inbox.queue)
                        or (self._store_promptly and bool(inbox.unstored))
                        or state.wants_to_finalize()
                    ),
                    timeout=None
                    if wake_at is None
                    else max(wake_at - now, timedelta(milliseconds=1)),
                    timeout_summary=(
                        f"{state.phase.value} until {wake_at.isoformat()}"
                        if wake_at is not None
                        else f"{state.phase.value} until approved"
                    ),
                )

    def _inputs_received_before(self, deadline: datetime) -> bool:
        """Whether inputs that arrived before ``deadline`` wait in the queue.

        They arrive while a refresh or a rejection record runs. Applied before the deadline
        is checked, so that usage received inside the grace period is billed even when the
        grace period ended meanwhile; runs without the patch finalize first and refuse it.
        """
        if not self._inbox.holds_inputs_before(deadline):
            return False
        return self._state.lean_shape or workflow.patched(versions.PATCH_INPUTS_BEFORE_DEADLINE)

    def _grace_deadline(self) -> datetime:
        assert self._state.grace_period_ends_at is not None
        return self._state.grace_period_ends_at

    async def _create_draft(self) -> None:
        if self._state.lean_shape:
            await self._draft_invoice()
            return
        state = self._state
        invoice: Invoice = await store_step(
            InvoiceActivities.create_draft,
            CreateDraftRequest(
                subscription_external_id=state.input.subscription_external_id,
                period_start=state.input.period_start,
                period_end=state.input.period_end,
                drafted_at=workflow.now(),
                grace_period_seconds=state.input.grace_period_seconds,
            ),
            summary="create draft invoice",
        )
        if not self._open_grace_period(invoice, presentation.upsert_invoice_attributes):
            return
        drafted = await store_step(
            InvoiceActivities.queue_drafted_webhook,
            InvoiceRef(invoice_id=invoice.id),
            summary="queue invoice.drafted webhook",
        )
        await self._send_drafted_webhooks(invoice, drafted)

    async def _draft_invoice(self) -> None:
        """Period end in one store step: the settings, the draft, the drafted webhook rows,
        and with a grace period of zero its finalization too."""
        state = self._state
        outcome: DraftOutcome = await store_step(
            InvoiceActivities.draft_invoice,
            DraftRequest(
                subscription_external_id=state.input.subscription_external_id,
                period_start=state.input.period_start,
                period_end=state.input.period_end,
                drafted_at=workflow.now(),
                grace_period_seconds=state.input.grace_period_seconds,
                finalize_when_due=state.finalize_with_draft,
            ),
            summary="draft the invoice",
            local=state.local_store_steps,
        )
        state.settings = outcome.settings
        state.preview = outcome.preview
        if outcome.finalization is None:
            if self._open_grace_period(outcome.invoice, presentation.upsert_changed_attributes):
                await self._send_drafted_webhooks(outcome.invoice, outcome.delivery_ids)
            return
        # Finalized (closed, held) in the store already: shown and judged so from now on.
        state.invoice, state.phase = outcome.invoice, PeriodPhase.FINALIZING
        self._inbox.invoice_id = outcome.invoice.id
        state.grace_period_ends_at = outcome.invoice.expected_finalization_at
        await self._send_drafted_webhooks(outcome.invoice, outcome.delivery_ids)
        await self._take_finalization(outcome.finalization)

    def _open_grace_period(
        self, invoice: Invoice, upsert_attributes: Callable[[PeriodState], None]
    ) -> bool:
        """Take the stored draft; False when an earlier run of this period already ended it."""
        state = self._state
        state.invoice = invoice
        if invoice.status != InvoiceStatus.DRAFT:
            # Finalized by an earlier run of this period: nothing left to do but report it.
            state.phase = PeriodPhase(invoice.status.value)
            upsert_attributes(state)
            return False
        state.phase = PeriodPhase.DRAFT
        self._inbox.invoice_id = invoice.id
        # The draft's own deadline, which follows its settings (a draft stored before
        # deadlines were stored has none: its grace period runs from now).
        state.grace_period_ends_at = invoice.expected_finalization_at or (
            workflow.now() + self._grace_period()
        )
        state.refresh_due_at = None
        upsert_attributes(state)
        self._show_details()
        return True

    async def _send_drafted_webhooks(self, invoice: Invoice, delivery_ids: list[str]) -> None:
        await start_deliveries(
            f"invoice.drafted for {invoice.id}",
            delivery_ids,
            self._state.input.webhook_retry_window_seconds,
        )

    def _grace_period(self) -> timedelta:
        if self._state.input.grace_period_seconds is not None:
            return timedelta(seconds=self._state.input.grace_period_seconds)
        assert self._state.settings is not None
        return self._state.settings.grace_period_days * DAY

    async def _finalize(self) -> None:
        """Finalize, close or hold the draft. An approval (asked for, or the auto-approval
        time of a held invoice passed) finalizes whatever the approval rules say."""
        state = self._state
        assert state.invoice is not None
        approved_by, note = state.approval_to_give()
        state.phase = PeriodPhase.FINALIZING
        self._show_details()
        result: FinalizeResult = await store_step(
            InvoiceActivities.finalize_invoice,
            FinalizeRequest(
                invoice_id=state.invoice.id,
                issued_at=workflow.now(),
                requested_by=state.finalize_requested_by,
                approved_by=approved_by,
                approval_note=note,
            ),
            summary="finalize or close the invoice"
            if approved_by is None
            else f"finalize the invoice approved by {approved_by}",
            local=state.local_store_steps,
        )
        await self._take_finalization(result)

    async def _take_finalization(self, result: FinalizeResult | FinalizationOutcome) -> None:
        """The invoice finalized, closed or held by a store step."""
        state = self._state
        state.invoice = result.invoice
        if result.held:
            await self._hold_for_approval(result)
            return
        self._pending_deliveries = result.delivery_ids
        closed = result.invoice.status == InvoiceStatus.CLOSED
        state.phase = PeriodPhase.CLOSED if closed else PeriodPhase.FINALIZED
        state.preview = None  # the invoice is what it is now
        self._inbox.answer_finalization(result.invoice)
        if state.lean_shape:
            presentation.upsert_changed_attributes(state)
        else:
            presentation.upsert_invoice_attributes(state)
        self._show_details()

    async def _hold_for_approval(self, result: FinalizeResult | FinalizationOutcome) -> None:
        """An approval rule matched: the draft waits for an approval (or auto-approval)."""
        state = self._state
        state.phase = PeriodPhase.AWAITING_APPROVAL
        hours = result.auto_approve_after_hours
        if state.auto_approve_at is None and hours is not None:
            state.auto_approve_at = workflow.now() + timedelta(hours=float(hours))
        self._inbox.answer_finalization(result.invoice, held=True)
        presentation.upsert_changed_attributes(state)
        self._show_details()
        await start_deliveries(
            f"invoice.approval_required for {result.invoice.id}",
            result.delivery_ids,
            state.input.webhook_retry_window_seconds,
        )

    def _count_delivery(self, delivered: bool) -> None:
        if delivered:
            self._state.webhooks_delivered += 1
        else:
            self._state.webhooks_failed += 1
        self._show_details()

    # ------------------------------------------------------------------ signals

    def _receive(
        self, kind: str, model: type[BaseModel], args: Sequence[Any], *, answered: bool = False
    ) -> bool:
        return self._inbox.receive_signal(
            kind, model, args, judge_now=self._judge_now(), answered_by_finalization=answered
        )

    def _judge_now(self) -> Callable[[str], None] | None:
        """The phase check at arrival, once the main loop no longer applies inputs."""
        applies_inputs = phases.PHASES[self._state.phase].applies_inputs
        return None if applies_inputs else self._commands.check_allowed

    @workflow.signal(name="edit_fee")
    def edit_fee(self, *args: Any) -> None:
        self._receive(phases.EDIT_FEE, EditFee, args)

    @workflow.signal(name="remove_fee_adjustment")
    def remove_fee_adjustment(self, *args: Any) -> None:
        self._receive(phases.REMOVE_FEE_ADJUSTMENT, RemoveFeeAdjustment, args)

    @workflow.signal(name="refresh_invoice")
    def refresh_invoice(self, *args: Any) -> None:
        self._receive(phases.REFRESH_INVOICE, RefreshInvoice, args)

    @workflow.signal(name="finalize_invoice")
    def finalize_invoice(self, *args: Any) -> None:
        queued = self._receive(phases.FINALIZE_INVOICE, FinalizeInvoice, args)
        if queued and self._state.phase == PeriodPhase.DRAFT:
            message: FinalizeInvoice = self._inbox.queue[-1].message
            self._commands.ask_finalize(message.requested_by)  # ends the grace timer at once

    @workflow.signal(name="approve_invoice")
    def approve_invoice(self, *args: Any) -> None:
        """Approve a held invoice (or finalize a draft now, approved); :class:`ApproveInvoice`."""
        state = self._state
        accepted = self._receive(phases.APPROVE_INVOICE, ApproveInvoice, args, answered=True)
        if accepted and state.phase in _APPROVABLE:
            message: ApproveInvoice = self._inbox.queue[-1].message
            state.ask_approval(message.requested_by, message.note)  # ends the wait at once

    @workflow.signal(name="recompute_grace_period")
    def recompute_grace_period(self, *args: Any) -> None:
        """The grace period setting changed (:class:`RecomputeGracePeriod`)."""
        self._receive(phases.RECOMPUTE_GRACE_PERIOD, RecomputeGracePeriod, args)

    @workflow.signal(dynamic=True, description="add_usage (AddUsage); others are refused")
    def usage_or_unknown_signal(self, name: str, args: Sequence[RawValue]) -> None:
        """``add_usage`` arrives here undecoded (its store step validates it); any other
        name is refused as unknown."""
        if name != phases.ADD_USAGE:
            self._inbox.receive_unknown_signal(name, args)
        elif versions.consult(self._state).usage_as_received:
            self._inbox.receive_usage_text(args, judge_now=self._judge_now())
        elif (decoded := self._inbox.decoded_or_dropped(name, args)) is not None:
            self._receive(phases.ADD_USAGE, AddUsage, decoded)  # as the named handler did

    # ------------------------------------------------------------------ updates

    def _validate(self, kind: str, message: Any, model: type[BaseModel]) -> None:
        """Validators refuse early a missing payload and what the current phase cannot accept."""
        self._inbox.check_payload(kind, message, model)
        self._commands.check_allowed(kind)

    @workflow.update(name="add_usage_sync")
    async def add_usage_sync(self, message: AddUsage) -> UsageReceipt:
        receipt: UsageReceipt = await self._inbox.submit(phases.ADD_USAGE, message)
        return receipt

    @add_usage_sync.validator
    def _validate_add_usage(self, message: AddUsage) -> None:
        self._validate(phases.ADD_USAGE, message, AddUsage)

    @workflow.update(name="edit_fee_sync")
    async def edit_fee_sync(self, message: EditFee) -> Invoice:
        invoice: Invoice = await self._inbox.submit(phases.EDIT_FEE, message)
        return invoice

    @edit_fee_sync.validator
    def _validate_edit_fee(self, message: EditFee) -> None:
        self._validate(phases.EDIT_FEE, message, EditFee)
        self._commands.check_charge(message.charge_code)

    @workflow.update(name="remove_fee_adjustment_sync")
    async def remove_fee_adjustment_sync(self, message: RemoveFeeAdjustment) -> Invoice:
        invoice: Invoice = await self._inbox.submit(phases.REMOVE_FEE_ADJUSTMENT, message)
        return invoice

    @remove_fee_adjustment_sync.validator
    def _validate_remove_fee_adjustment(self, message: RemoveFeeAdjustment) -> None:
        self._validate(phases.REMOVE_FEE_ADJUSTMENT, message, RemoveFeeAdjustment)
        self._commands.check_charge(message.charge_code)

    @workflow.update(name="refresh_invoice_sync")
    async def refresh_invoice_sync(self, message: RefreshInvoice) -> Invoice:
        invoice: Invoice = await self._inbox.submit(phases.REFRESH_INVOICE, message)
        return invoice

    @refresh_invoice_sync.validator
    def _validate_refresh(self, message: RefreshInvoice) -> None:
        self._validate(phases.REFRESH_INVOICE, message, RefreshInvoice)

    @workflow.update(name="finalize_invoice_sync")
    async def finalize_invoice_sync(self, message: FinalizeInvoice) -> Invoice:
        """Ends the grace period now and returns the finalized (or closed) invoice, or the
        draft held for approval."""
        if self._state.phase == PeriodPhase.DRAFT:
            self._commands.ask_finalize(message.requested_by)  # ends the grace timer at once
        await self._inbox.submit(phases.FINALIZE_INVOICE, message, answered_by_finalization=True)
        await workflow.wait_condition(
            lambda: self._state.phase in (*phases.FINAL_PHASES, PeriodPhase.AWAITING_APPROVAL)
        )
        assert self._state.invoice is not None
        return self._state.invoice

    @finalize_invoice_sync.validator
    def _validate_finalize(self, message: FinalizeInvoice) -> None:
        if self._state.phase == PeriodPhase.FINALIZING:  # under way: it answers the update
            self._inbox.check_payload(phases.FINALIZE_INVOICE, message, FinalizeInvoice)
            return
        self._validate(phases.FINALIZE_INVOICE, message, FinalizeInvoice)

    @workflow.update(name="approve_invoice_sync")
    async def approve_invoice_sync(self, message: ApproveInvoice) -> Invoice:
        """Approves the invoice (held, or still in its grace period) and returns it
        finalized; an invoice that needs no approval is finalized as ``not_required``."""
        self._state.ask_approval(message.requested_by, message.note)  # ends the wait at once
        await self._inbox.submit(phases.APPROVE_INVOICE, message, answered_by_finalization=True)
        await workflow.wait_condition(lambda: self._state.phase in phases.FINAL_PHASES)
        assert self._state.invoice is not None
        return self._state.invoice

    @approve_invoice_sync.validator
    def _validate_approve(self, message: ApproveInvoice) -> None:
        self._validate(phases.APPROVE_INVOICE, message, ApproveInvoice)

    # ------------------------------------------------------------------ queries

    @workflow.query(name="invoice")
    def invoice(self) -> PeriodView:
        return presentation.period_view(self._state, self._inbox)

    @workflow.query(name="preview")
    def preview(self) -> InvoicePreview | None:
        """The invoice as finalization would make it now (None before the draft and once
        final)."""
        return self._state.preview

    @workflow.query(name="rejections")
    def rejections(self) -> list[RejectedInput]:
        return list(self._inbox.rejections)

    # ------------------------------------------------------------------ plumbing

    def _show_details(self) -> None:
        presentation.show_details(self._state, self._inbox)
