"""How each input changes a billing period: one handler per message type.

:class:`PeriodCommands` applies the commands that :class:`workflows.inbox.Inbox` queued,
each after the phase rule of ``workflows.phases``: usage is recorded in the store, fee
edits and refreshes change the draft (ahead of any backlog: an operator waits on them),
finalize-now ends the grace period. Each handler returns what the update's sender gets.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import Priority
from temporalio.exceptions import ApplicationError

from activities.invoices import (
    DraftChange,
    FeeAdjustmentRequest,
    InvoiceActivities,
    RecomputeGracePeriodRequest,
    RecordUsageBatchesRequest,
    RecordUsageRequest,
    RefreshRequest,
    RemoveFeeAdjustmentRequest,
)
from billing.errors import UnknownCharge
from billing.models import Invoice, RejectedEvent, UsageBatchesReceipt, UsageEvent, UsageReceipt
from billing.plans import require_charge
from workflows import presentation
from workflows.inbox import Inbox, QueuedCommand, StoreCall
from workflows.messages import (
    AddUsage,
    ApproveInvoice,
    EditFee,
    FinalizeInvoice,
    PeriodPhase,
    RecomputeGracePeriod,
    RefreshInvoice,
    RemoveFeeAdjustment,
)
from workflows.period_state import PeriodState
from workflows.phases import ADD_USAGE, check_allowed

__all__ = ["EDIT_PRIORITY", "EDIT_PRIORITY_KEY", "PeriodCommands"]

# An operator waits on an edit: in runs before patch local-edits-usage-as-received its
# activity goes ahead of a month-end close's backlog (Temporal's task-queue priority; 3 is
# the default of every other activity); since, the edit is a local activity.
# A period an operator works on gets the same key for all its tasks
# (starter.periods.give_operator_priority).
EDIT_PRIORITY_KEY = 1
EDIT_PRIORITY = Priority(priority_key=EDIT_PRIORITY_KEY)
# The phases whose draft still changes: its grace period, or held for approval.
_EDITABLE = (PeriodPhase.DRAFT, PeriodPhase.AWAITING_APPROVAL)


# Each message type's handler, by name: one table per process rather than a dict of bound
# methods per cached period (~0.8 KiB, bench/README.md).
_HANDLERS: dict[type[BaseModel], str] = {
    AddUsage: "add_usage",
    EditFee: "edit_fee",
    RemoveFeeAdjustment: "remove_fee_adjustment",
    RefreshInvoice: "refresh_invoice",
    FinalizeInvoice: "request_finalize",
    ApproveInvoice: "approve",
    RecomputeGracePeriod: "recompute_grace_period",
}


class PeriodCommands:
    """The handlers of a period's inputs, dispatched by message type."""

    def __init__(self, state: PeriodState, inbox: Inbox, store: StoreCall) -> None:
        self._state = state
        self._inbox = inbox
        self._store = store

    async def apply_queued(self) -> None:
        """Work off the inbox: every queued command, in arrival order."""
        await self._inbox.work_off(
            self.apply, self.record_usage_signals, self.record_usage_texts, self._store
        )

    async def apply(self, command: QueuedCommand) -> Any:
        """Apply one command; refusals are ``ApplicationError`` s with a clear message."""
        self.check_allowed(command.kind)
        handler = getattr(self, _HANDLERS[type(command.message)])
        return await handler(command.message)

    # ------------------------------------------------------------------ the rules

    def check_allowed(self, kind: str) -> None:
        """Refuse ``kind`` when the current phase does not accept it (``workflows.phases``)."""
        state = self._state
        check_allowed(kind, state.phase, invoice=state.invoice, period_end=state.input.period_end)

    def check_charge(self, charge_code: str) -> None:
        """Refuse an edit of a charge the plan does not have (``UnknownCharge``).

        Before the settings are loaded, or when they list no charges, the store checks.
        """
        settings = self._state.settings
        if settings is None or not settings.charge_codes:
            return
        try:
            require_charge(charge_code, settings.charge_codes)
        except UnknownCharge as err:
            raise ApplicationError(str(err), type="UnknownCharge", non_retryable=True) from None

    # ------------------------------------------------------------------ the handlers

    async def add_usage(self, message: AddUsage) -> UsageReceipt:
        return await self.record_usage(message.events, message.requested_by)

    async def edit_fee(self, message: EditFee) -> Invoice:
        invoice = self._draft()
        self.check_charge(message.charge_code)
        return await self._change_draft(
            InvoiceActivities.adjust_fee,
            FeeAdjustmentRequest(
                invoice_id=invoice.id,
                adjustment=message.to_adjustment(),
                requested_by=message.requested_by,
            ),
            summary=f"edit fee {message.charge_code} ({message.mode.value})",
        )

    async def remove_fee_adjustment(self, message: RemoveFeeAdjustment) -> Invoice:
        invoice = self._draft()
        self.check_charge(message.charge_code)
        return await self._change_draft(
            InvoiceActivities.remove_fee_adjustment,
            RemoveFeeAdjustmentRequest(
                invoice_id=invoice.id,
                charge_code=message.charge_code,
                requested_by=message.requested_by,
            ),
            summary=f"remove adjustment of {message.charge_code}",
        )

    async def refresh_invoice(self, message: RefreshInvoice) -> Invoice:
        invoice = self._draft()
        self.take(
            await self._edit(
                InvoiceActivities.refresh_draft,
                RefreshRequest(invoice_id=invoice.id, requested_by=message.requested_by),
                summary="refresh draft invoice",
            )
        )
        self._state.refresh_due_at = None
        return self._shown()

    async def request_finalize(self, message: FinalizeInvoice) -> Invoice:
        """End the grace period now; a held invoice stays held (only approval ends it)."""
        self.ask_finalize(message.requested_by)
        return self._draft()

    async def approve(self, message: ApproveInvoice) -> Invoice:
        """Finalize now, whatever the approval rules say (held or still in its grace)."""
        self._state.ask_approval(message.requested_by, message.note)
        return self._draft()

    async def recompute_grace_period(self, message: RecomputeGracePeriod) -> Invoice | None:
        """Move the draft's deadline to what its settings give now (a catalog change).

        Only a draft in its grace period follows; before period end the draft will read
        the settings anyway, and a held or final invoice has no grace period left.
        """
        state = self._state
        if state.phase != PeriodPhase.DRAFT or state.input.grace_period_seconds is not None:
            return state.invoice
        invoice: Invoice = await self._edit(
            InvoiceActivities.recompute_grace_period,
            RecomputeGracePeriodRequest(
                invoice_id=self._draft().id, requested_by=message.requested_by
            ),
            summary="follow the grace period setting",
        )
        state.invoice = invoice
        if invoice.expected_finalization_at is not None:
            state.grace_period_ends_at = invoice.expected_finalization_at
        return self._shown()

    # ------------------------------------------------------------------ asked at arrival

    def ask_finalize(self, requested_by: str | None) -> None:
        """Finalize-now: ends a grace period at once (the wait wakes on it)."""
        state = self._state
        if not state.finalize_requested:
            state.finalize_requested = True
            state.finalize_requested_by = requested_by

    # ------------------------------------------------------------------ usage and refresh

    async def record_usage_signals(
        self, events: list[UsageEvent], requested_by: str | None
    ) -> UsageReceipt:
        """Record the merged events of usage signals, if the phase still accepts usage."""
        self.check_allowed(ADD_USAGE)
        return await self.record_usage(events, requested_by)

    async def record_usage(
        self, events: list[UsageEvent], requested_by: str | None = None
    ) -> UsageReceipt:
        """Record usage; accepted usage on the draft schedules a (debounced) refresh."""
        result: UsageReceipt = await self._store(
            InvoiceActivities.record_usage,
            RecordUsageRequest(**self._usage_target(), events=events, requested_by=requested_by),
            summary=f"record {len(events)} usage events",
            local=self._state.local_store_steps,
        )
        self._count(result)
        return UsageReceipt(
            accepted=result.accepted,
            duplicates=result.duplicates,
            rejected=[
                RejectedEvent(transaction_id=r.transaction_id, code=r.code, reason=r.reason)
                for r in result.rejected
            ],
        )

    async def record_usage_texts(self, texts: list[str]) -> UsageBatchesReceipt:
        """Validate and record usage signals as received, if the phase still accepts usage."""
        self.check_allowed(ADD_USAGE)
        result: UsageBatchesReceipt = await self._store(
            InvoiceActivities.record_usage_batches,
            RecordUsageBatchesRequest(**self._usage_target(), batches=texts),
            summary=f"record {len(texts)} usage signals",
            local=True,
        )
        self._count(result)
        return result

    def _usage_target(self) -> dict[str, Any]:
        """Where usage is recorded: the period, and its draft once there is one (late
        usage is written to the draft's timeline)."""
        state = self._state
        return {
            "subscription_external_id": state.input.subscription_external_id,
            "period_start": state.input.period_start,
            "period_end": state.input.period_end,
            "invoice_id": state.invoice.id if state.invoice is not None else None,
        }

    def _count(self, result: UsageReceipt) -> None:
        """Count what a batch did; accepted usage on the draft schedules a refresh."""
        state = self._state
        state.events_accepted += result.accepted
        state.events_duplicated += result.duplicates
        if result.accepted and state.phase in _EDITABLE and state.refresh_due_at is None:
            # Debounce: a burst of late usage costs one refresh of the draft.
            state.refresh_due_at = workflow.now() + timedelta(
                seconds=state.input.refresh_debounce_seconds
            )

    async def refresh_when_due(self) -> None:
        """The debounced refresh after late usage, once its time has come."""
        state = self._state
        if state.refresh_due_at is not None and workflow.now() >= state.refresh_due_at:
            if state.phase in _EDITABLE:
                self.take(
                    await self._store(
                        InvoiceActivities.refresh_draft,
                        RefreshRequest(invoice_id=self._draft().id),
                        summary="refresh draft invoice",
                    )
                )
                self._shown()
            state.refresh_due_at = None

    # ------------------------------------------------------------------ helpers

    async def _change_draft(self, activity: Any, request: BaseModel, *, summary: str) -> Invoice:
        self.take(await self._edit(activity, request, summary=summary))
        return self._shown()

    async def _edit(self, activity: Any, request: BaseModel, *, summary: str) -> Any:
        """An operator's change: a local activity in the workflow task that received it (the
        period's task-queue priority puts that task first), or in runs before patch
        ``local-edits-usage-as-received`` a regular activity with the edit priority."""
        if self._state.local_edits:
            return await self._store(activity, request, summary=summary, local=True)
        return await self._store(activity, request, summary=summary, priority=EDIT_PRIORITY)

    def take(self, change: DraftChange) -> None:
        """The changed draft and its preview (none from a history recorded before previews)."""
        self._state.invoice = change.invoice
        self._state.preview = change.preview

    def _shown(self) -> Invoice:
        """The changed draft, shown in the search attributes and the UI details."""
        if self._state.lean_shape:
            presentation.upsert_changed_attributes(self._state)  # only a changed total
        else:
            presentation.upsert_invoice_attributes(self._state)
        presentation.show_details(self._state, self._inbox)
        return self._draft()

    def _draft(self) -> Invoice:
        assert self._state.invoice is not None
        return self._state.invoice
