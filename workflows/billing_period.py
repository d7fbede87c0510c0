"""One billing period of one subscription, from open usage to the final invoice.

The story (DESIGN.md section 3):

1. **open**: until the period ends, usage batches are recorded in the store.
2. **draft**: at period end the draft invoice is created; during the grace period
   (a durable timer from the draft's creation) late usage, fee edits and refreshes are
   applied; usage refreshes the draft, debounced so a burst costs one refresh.
3. **finalizing**: when the grace period ends or someone asks to finalize now, one
   activity finalizes the invoice (coupons, taxes, credits, number, outbox) or closes it
   when it is empty and the customer's settings say skip.
4. **finalized / closed**: the ``invoice.created`` webhook is delivered (never for a
   closed invoice); every later change is refused; the workflow returns the invoice.

Every mutation arrives as a signal (fire and forget) or an update (waits for the result;
its validator refuses bad input before it is accepted). Both go through one queue that
the main loop works off in arrival order, so the invoice changes one step at a time.
A malformed or refused signal never fails a workflow task: it is recorded with its
reason (query ``rejections``, and the ``rejected_inputs`` table).
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.common import Priority, RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.invoices import (
        CreateDraftRequest,
        FeeAdjustmentRequest,
        FinalizeRequest,
        FinalizeResult,
        InvoiceActivities,
        InvoiceRef,
        PeriodSettingsRequest,
        RecordRejectionRequest,
        RecordUsageRequest,
        RecordUsageResult,
        RemoveAdjustmentRequest,
    )
    from activities.webhooks import (
        WEBHOOK_ATTEMPT_TIMEOUT,
        WEBHOOK_RETRY_POLICY,
        WEBHOOK_SCHEDULE_SLACK,
        DeliverWebhookRequest,
        DeliveryResult,
        WebhookActivities,
    )
    from billing.models import Invoice, InvoiceStatus, UsageEvent
    from workflows import search_attributes
    from workflows.messages import (
        AddUsage,
        BillingPeriodInput,
        EditFee,
        FinalizeInvoice,
        PeriodPhase,
        PeriodView,
        RefreshInvoice,
        Rejection,
        RemoveFeeAdjustment,
        UsageReceipt,
        UsageRejection,
    )
    from workflows.period_state import CarriedState, QueuedCommand, carried_state
    from workflows.webhook_delivery import WebhookDeliveryInput, WebhookDeliveryWorkflow

__all__ = ["BillingPeriodWorkflow"]

# Timeouts and retries, named once. Store activities retry until the database is back.
STORE_TIMEOUT = timedelta(seconds=60)
STORE_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
MAX_EVENTS_PER_ACTIVITY = 2000  # usage signals merged into one store call, far below 2 MB
MAX_UPDATES_PER_RUN = 1500  # Temporal allows 2,000 updates per run
PATCH_STORE_REJECTIONS_PROMPTLY = "store-rejections-promptly"
PATCH_INPUTS_BEFORE_DEADLINE = "apply-inputs-received-before-deadline"
# An operator waits on an edit: its activity goes ahead of a month-end close's backlog
# (Temporal's task-queue priority; 3 is the default of every other activity).
EDIT_PRIORITY = Priority(priority_key=1)
KEPT_REJECTIONS = 100  # the query shows the latest ones; the database keeps all
DAY = timedelta(days=1)

EDITABLE = (PeriodPhase.DRAFT,)
ACCEPTS_USAGE = (PeriodPhase.OPEN, PeriodPhase.DRAFT)


@workflow.defn
class BillingPeriodWorkflow:
    @workflow.init
    def __init__(self, input: BillingPeriodInput) -> None:
        self._input = input
        carried = carried_state(input)
        self._phase = carried.phase
        self._settings = carried.settings
        self._invoice = carried.invoice
        self._grace_ends_at = carried.grace_period_ends_at
        self._refresh_due_at = carried.refresh_due_at
        self._finalize_requested = carried.finalize_requested
        self._events_accepted = carried.events_accepted
        self._events_duplicated = carried.events_duplicated
        self._inputs_rejected = carried.inputs_rejected
        self._rejections: deque[Rejection] = deque(carried.rejections, maxlen=KEPT_REJECTIONS)
        self._sequence = carried.sequence
        self._queue: deque[QueuedCommand] = deque()
        self._unstored_rejections: list[RecordRejectionRequest] = []
        self._signals_this_run = 0
        self._updates_this_run = 0
        self._webhooks_delivered = 0
        self._webhooks_failed = 0
        self._pending_deliveries: list[str] = []
        self._store_promptly = False

    # ------------------------------------------------------------------ the story

    @workflow.run
    async def run(self, input: BillingPeriodInput) -> Invoice:
        if self._settings is None:
            self._settings = await self._store(
                InvoiceActivities.load_period_settings,
                PeriodSettingsRequest(
                    subscription_external_id=input.subscription_external_id,
                    period_start=input.period_start,
                    period_end=input.period_end,
                ),
                summary="load customer settings",
            )
            workflow.upsert_search_attributes(
                [
                    search_attributes.CUSTOMER.value_set(self._settings.customer_external_id),
                    search_attributes.SUBSCRIPTION.value_set(input.subscription_external_id),
                    search_attributes.PERIOD_START.value_set(input.period_start),
                    search_attributes.INVOICE_STATUS.value_set(self._phase.value),
                ]
            )
        self._show_details()

        if self._phase == PeriodPhase.OPEN:
            if not await self._work_until(lambda: input.period_end):
                return await self._continue_as_new()
            await self._create_draft()

        if self._phase == PeriodPhase.DRAFT:
            if not await self._work_until(self._grace_deadline):
                return await self._continue_as_new()
            await self._finalize()

        await self._deliver_invoice_webhooks()
        await self._reject_remaining_commands()
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._store_rejections()
        assert self._invoice is not None
        return self._invoice

    async def _work_until(self, deadline: Callable[[], datetime]) -> bool:
        """Apply queued commands until ``deadline()`` passes or finalize-now is asked.

        Returns False when this run should hand over to a new run (history bound).
        """
        while True:
            await self._apply_queued_commands()
            await self._refresh_when_due()
            if self._inputs_received_before(deadline()):
                continue
            now = workflow.now()
            if now >= deadline() or (self._finalize_requested and self._phase == PeriodPhase.DRAFT):
                return True
            if self._should_continue_as_new() and await self._drained_for_handover():
                return False
            wake_at = deadline()
            if self._refresh_due_at is not None:
                wake_at = min(wake_at, self._refresh_due_at)
            # Histories recorded before this patch woke only for commands (docs/UPGRADES.md).
            self._store_promptly = workflow.patched(PATCH_STORE_REJECTIONS_PROMPTLY)
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: (
                        bool(self._queue)
                        or (self._store_promptly and bool(self._unstored_rejections))
                        or self._finalize_requested
                    ),
                    timeout=max(wake_at - now, timedelta(milliseconds=1)),
                    timeout_summary=f"{self._phase.value} until {wake_at.isoformat()}",
                )

    def _inputs_received_before(self, deadline: datetime) -> bool:
        """Whether inputs that arrived before ``deadline`` wait in the queue.

        They arrive while a refresh or a rejection record runs. Applied before the deadline
        is checked, so that usage received inside the grace period is billed even when the
        grace period ended meanwhile; runs before the patch finalized first and refused it.
        """
        if not any(command.received_at < deadline for command in self._queue):
            return False
        return workflow.patched(PATCH_INPUTS_BEFORE_DEADLINE)

    def _grace_deadline(self) -> datetime:
        assert self._grace_ends_at is not None
        return self._grace_ends_at

    async def _create_draft(self) -> None:
        self._invoice = await self._store(
            InvoiceActivities.create_draft,
            CreateDraftRequest(
                subscription_external_id=self._input.subscription_external_id,
                period_start=self._input.period_start,
                period_end=self._input.period_end,
            ),
            summary="create draft invoice",
        )
        if self._invoice.status != InvoiceStatus.DRAFT:
            # Finalized by an earlier run of this period: nothing left to do but report it.
            self._phase = PeriodPhase(self._invoice.status.value)
            self._upsert_invoice_attributes()
            return
        self._phase = PeriodPhase.DRAFT
        self._grace_ends_at = workflow.now() + self._grace_period()
        self._refresh_due_at = None
        self._upsert_invoice_attributes()
        self._show_details()
        drafted = await self._store(
            InvoiceActivities.queue_drafted_webhook,
            InvoiceRef(invoice_id=self._invoice.id),
            summary="queue invoice.drafted webhook",
        )
        for delivery_id in drafted:
            # The grace period does not wait for a drafted notification to arrive.
            await workflow.start_child_workflow(
                WebhookDeliveryWorkflow.run,
                WebhookDeliveryInput(
                    delivery_id=delivery_id,
                    retry_window_seconds=self._input.webhook_retry_window_seconds,
                ),
                id=f"webhook-delivery/{delivery_id}/1",
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                static_summary=f"invoice.drafted for {self._invoice.id}",
            )

    def _grace_period(self) -> timedelta:
        if self._input.grace_period_seconds is not None:
            return timedelta(seconds=self._input.grace_period_seconds)
        assert self._settings is not None
        return self._settings.grace_period_days * DAY

    async def _finalize(self) -> None:
        assert self._invoice is not None
        self._phase = PeriodPhase.FINALIZING
        self._show_details()
        result: FinalizeResult = await self._store(
            InvoiceActivities.finalize_invoice,
            FinalizeRequest(invoice_id=self._invoice.id, issued_at=workflow.now()),
            summary="finalize or close the invoice",
        )
        self._invoice = result.invoice
        self._pending_deliveries = result.delivery_ids
        self._phase = (
            PeriodPhase.CLOSED
            if result.invoice.status == InvoiceStatus.CLOSED
            else PeriodPhase.FINALIZED
        )
        self._upsert_invoice_attributes()
        self._show_details()

    async def _deliver_invoice_webhooks(self) -> None:
        give_up_at = workflow.now() + timedelta(seconds=self._input.webhook_retry_window_seconds)
        for delivery_id in self._pending_deliveries:
            outcome = await self._deliver(delivery_id, give_up_at)
            if outcome == "succeeded":
                self._webhooks_delivered += 1
            else:
                self._webhooks_failed += 1
            self._show_details()

    async def _deliver(self, delivery_id: str, give_up_at: datetime) -> str:
        window = max(give_up_at - workflow.now(), timedelta(seconds=1))
        try:
            result: DeliveryResult = await workflow.execute_activity_method(
                WebhookActivities.deliver_webhook,
                DeliverWebhookRequest(delivery_id=delivery_id, give_up_at=give_up_at),
                start_to_close_timeout=WEBHOOK_ATTEMPT_TIMEOUT,
                schedule_to_close_timeout=window + WEBHOOK_SCHEDULE_SLACK,
                retry_policy=WEBHOOK_RETRY_POLICY,
                summary=f"deliver webhook {delivery_id}",
            )
        except ActivityError as err:
            # The delivery log says "failed"; an operator can retry it (billing webhook retry).
            workflow.logger.warning("webhook %s not delivered: %s", delivery_id, err.cause)
            return "failed"
        return str(result.status)

    # ------------------------------------------------------------------ commands

    async def _apply_queued_commands(self) -> None:
        while self._queue:
            command = self._queue.popleft()
            if command.kind == "add_usage" and not command.from_update:
                await self._apply_usage_signals(command)
                continue
            try:
                command.result = await self._apply(command)
            except ApplicationError as err:
                command.error = err
                self._reject(command.kind, err.message, command.message)
            command.done = True
        await self._store_rejections()

    async def _apply(self, command: QueuedCommand) -> Any:
        """Apply one command; refusals are ``ApplicationError`` s with a clear message."""
        self._check_allowed(command.kind)
        assert self._invoice is not None or command.kind == "add_usage"
        message = command.message
        if isinstance(message, AddUsage):
            result = await self._record_usage(message.events)
            return _receipt(result)
        assert self._invoice is not None
        if isinstance(message, EditFee):
            self._check_charge(message.charge_code)
            self._invoice = await self._store(
                InvoiceActivities.adjust_fee,
                FeeAdjustmentRequest(
                    invoice_id=self._invoice.id, adjustment=message.to_adjustment()
                ),
                summary=f"edit fee {message.charge_code} ({message.mode.value})",
                priority=EDIT_PRIORITY,
            )
        elif isinstance(message, RemoveFeeAdjustment):
            self._check_charge(message.charge_code)
            self._invoice = await self._store(
                InvoiceActivities.remove_adjustment,
                RemoveAdjustmentRequest(
                    invoice_id=self._invoice.id, charge_code=message.charge_code
                ),
                summary=f"remove adjustment of {message.charge_code}",
                priority=EDIT_PRIORITY,
            )
        elif isinstance(message, RefreshInvoice):
            await self._refresh(priority=EDIT_PRIORITY)
        elif isinstance(message, FinalizeInvoice):
            self._finalize_requested = True
            return self._invoice
        self._upsert_invoice_attributes()
        self._show_details()
        return self._invoice

    async def _apply_usage_signals(self, first: QueuedCommand) -> None:
        """Merge consecutive usage signals into one store call (bounded history).

        Usage signals are validated here, one merged batch per step, not in the signal
        handler: a burst of large batches would otherwise be checked in one workflow task
        and trip the SDK's deadlock detector.
        """
        batch: list[QueuedCommand] = []
        events: list[UsageEvent] = []
        command = first
        while True:
            try:
                message = AddUsage.model_validate(command.message)
            except ValidationError as err:
                reason = f"malformed add_usage payload: {_short_error(err)}"
                self._reject("add_usage", reason, _excerpt([command.message]))
                command.done = True
            else:
                batch.append(command)
                events.extend(message.events)
            following = self._queue[0] if self._queue else None
            if (
                following is None
                or following.kind != "add_usage"
                or following.from_update
                or len(events) + _batch_size(following.message) > MAX_EVENTS_PER_ACTIVITY
            ):
                break
            command = self._queue.popleft()
        if not events:
            return
        try:
            self._check_allowed("add_usage")
            result = await self._record_usage(events)
        except ApplicationError as err:
            for command in batch:
                self._reject("add_usage", err.message, f"{_batch_size(command.message)} events")
        else:
            for rejected in result.rejected:
                self._reject(
                    "add_usage", f"event {rejected.transaction_id}: {rejected.reason}", None
                )
        for command in batch:
            command.done = True

    async def _record_usage(self, events: list[UsageEvent]) -> RecordUsageResult:
        result: RecordUsageResult = await self._store(
            InvoiceActivities.record_usage,
            RecordUsageRequest(
                subscription_external_id=self._input.subscription_external_id,
                period_start=self._input.period_start,
                period_end=self._input.period_end,
                events=events,
            ),
            summary=f"record {len(events)} usage events",
        )
        self._events_accepted += result.accepted
        self._events_duplicated += result.duplicates
        if result.accepted and self._phase == PeriodPhase.DRAFT and self._refresh_due_at is None:
            # Debounce: a burst of late usage costs one refresh of the draft.
            self._refresh_due_at = workflow.now() + timedelta(
                seconds=self._input.refresh_debounce_seconds
            )
        return result

    async def _refresh_when_due(self) -> None:
        if self._refresh_due_at is not None and workflow.now() >= self._refresh_due_at:
            if self._phase == PeriodPhase.DRAFT:
                await self._refresh()
                self._upsert_invoice_attributes()
                self._show_details()
            self._refresh_due_at = None

    async def _refresh(self, *, priority: Priority = Priority.default) -> None:
        assert self._invoice is not None
        self._invoice = await self._store(
            InvoiceActivities.refresh_draft,
            InvoiceRef(invoice_id=self._invoice.id),
            summary="refresh draft invoice",
            priority=priority,
        )
        self._refresh_due_at = None

    async def _reject_remaining_commands(self) -> None:
        """After finalization nothing is applied any more; tell every sender why."""
        while True:
            while self._queue:
                command = self._queue.popleft()
                try:
                    self._check_allowed(command.kind)
                except ApplicationError as err:
                    command.error = err
                    self._reject(command.kind, err.message, command.message)
                command.done = True
            await self._store_rejections()
            await workflow.wait_condition(
                lambda: workflow.all_handlers_finished() or bool(self._queue)
            )
            if not self._queue:
                return

    # ------------------------------------------------------------------ rules

    def _check_allowed(self, kind: str) -> None:
        """Which phase accepts which command; refusals name the invoice and the reason."""
        if self._phase in (PeriodPhase.FINALIZED, PeriodPhase.CLOSED, PeriodPhase.FINALIZING):
            label = self._invoice.number if self._invoice and self._invoice.number else "invoice"
            status = (
                "being finalized" if self._phase == PeriodPhase.FINALIZING else self._phase.value
            )
            if self._phase == PeriodPhase.CLOSED and self._invoice is not None:
                label = self._invoice.id
            raise ApplicationError(
                f"invoice {label} is {status}: it can no longer change",
                type="InvoiceNotEditable",
                non_retryable=True,
            )
        if kind != "add_usage" and self._phase == PeriodPhase.OPEN:
            raise ApplicationError(
                f"the period ends at {self._input.period_end.isoformat()}: there is no draft "
                f"invoice to {kind.replace('_', ' ')} yet",
                type="NoDraftYet",
                non_retryable=True,
            )

    def _check_charge(self, charge_code: str) -> None:
        assert self._settings is not None
        if self._settings.charge_codes and charge_code not in self._settings.charge_codes:
            known = ", ".join(self._settings.charge_codes)
            raise ApplicationError(
                f"charge {charge_code!r} is not part of this subscription's plan (charges: {known})",
                type="UnknownCharge",
                non_retryable=True,
            )

    # ------------------------------------------------------------------ signals

    def _receive_signal(self, kind: str, model: type[BaseModel], args: Sequence[Any]) -> None:
        """Validate a signal payload ourselves: a bad one is recorded, never raised."""
        self._signals_this_run += 1
        message: Any
        try:
            if len(args) != 1:
                raise ValueError(f"expected one argument, got {len(args)}")
            payload = _decoded(args[0])
            if model is AddUsage:
                # Only the shape here; the events are validated when the batch is applied.
                if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
                    raise ValueError("expected an object with a list of events")
                message = payload
            else:
                message = model.model_validate(payload)
        except (ValidationError, ValueError, TypeError, UnicodeDecodeError) as err:
            self._reject(kind, f"malformed {kind} payload: {_short_error(err)}", _excerpt(args))
            return
        if self._phase not in ACCEPTS_USAGE:
            try:
                self._check_allowed(kind)
            except ApplicationError as err:  # refused at once: the loop is past applying
                self._reject(kind, err.message, message)
                return
        if kind == "finalize_invoice" and self._phase == PeriodPhase.DRAFT:
            self._finalize_requested = True  # ends the grace timer at once
        self._queue.append(QueuedCommand(kind, message, from_update=False))

    @workflow.signal(name="add_usage")
    def add_usage(self, *args: Any) -> None:
        """Fire-and-forget usage batch (payload: :class:`AddUsage`)."""
        self._receive_signal("add_usage", AddUsage, args)

    @workflow.signal(name="edit_fee")
    def edit_fee(self, *args: Any) -> None:
        self._receive_signal("edit_fee", EditFee, args)

    @workflow.signal(name="remove_fee_adjustment")
    def remove_fee_adjustment(self, *args: Any) -> None:
        self._receive_signal("remove_fee_adjustment", RemoveFeeAdjustment, args)

    @workflow.signal(name="refresh_invoice")
    def refresh_invoice(self, *args: Any) -> None:
        self._receive_signal("refresh_invoice", RefreshInvoice, args)

    @workflow.signal(name="finalize_invoice")
    def finalize_invoice(self, *args: Any) -> None:
        self._receive_signal("finalize_invoice", FinalizeInvoice, args)

    @workflow.signal(dynamic=True)
    def unknown_signal(self, name: str, args: Sequence[RawValue]) -> None:
        self._signals_this_run += 1
        self._reject(name, f"unknown signal {name!r}", _excerpt(args))

    # ------------------------------------------------------------------ updates

    async def _run_update(self, kind: str, message: BaseModel) -> Any:
        self._updates_this_run += 1
        command = QueuedCommand(kind, message, from_update=True)
        self._queue.append(command)
        await workflow.wait_condition(lambda: command.done)
        if command.error is not None:
            raise command.error
        return command.result

    def _validate(self, kind: str, message: Any, model: type[BaseModel]) -> None:
        """Validators refuse early a missing payload and what the current phase cannot accept."""
        if not isinstance(message, model):
            raise ApplicationError(
                f"{kind}: expected a {model.__name__} object, got {type(message).__name__}",
                type="MalformedPayload",
                non_retryable=True,
            )
        self._check_allowed(kind)

    @workflow.update(name="add_usage_sync")
    async def add_usage_sync(self, message: AddUsage) -> UsageReceipt:
        result: UsageReceipt = await self._run_update("add_usage", message)
        return result

    @add_usage_sync.validator
    def _validate_add_usage(self, message: AddUsage) -> None:
        self._validate("add_usage", message, AddUsage)

    @workflow.update(name="edit_fee_sync")
    async def edit_fee_sync(self, message: EditFee) -> Invoice:
        result: Invoice = await self._run_update("edit_fee", message)
        return result

    @edit_fee_sync.validator
    def _validate_edit_fee(self, message: EditFee) -> None:
        self._validate("edit_fee", message, EditFee)
        if self._settings is not None:
            self._check_charge(message.charge_code)

    @workflow.update(name="remove_fee_adjustment_sync")
    async def remove_fee_adjustment_sync(self, message: RemoveFeeAdjustment) -> Invoice:
        result: Invoice = await self._run_update("remove_fee_adjustment", message)
        return result

    @remove_fee_adjustment_sync.validator
    def _validate_remove_fee_adjustment(self, message: RemoveFeeAdjustment) -> None:
        self._validate("remove_fee_adjustment", message, RemoveFeeAdjustment)
        if self._settings is not None:
            self._check_charge(message.charge_code)

    @workflow.update(name="refresh_invoice_sync")
    async def refresh_invoice_sync(self, message: RefreshInvoice) -> Invoice:
        result: Invoice = await self._run_update("refresh_invoice", message)
        return result

    @refresh_invoice_sync.validator
    def _validate_refresh(self, message: RefreshInvoice) -> None:
        self._validate("refresh_invoice", message, RefreshInvoice)

    @workflow.update(name="finalize_invoice_sync")
    async def finalize_invoice_sync(self, message: FinalizeInvoice) -> Invoice:
        """Ends the grace period now and returns the finalized (or closed) invoice."""
        self._updates_this_run += 1
        self._finalize_requested = True
        await workflow.wait_condition(
            lambda: self._phase in (PeriodPhase.FINALIZED, PeriodPhase.CLOSED)
        )
        assert self._invoice is not None
        return self._invoice

    @finalize_invoice_sync.validator
    def _validate_finalize(self, message: FinalizeInvoice) -> None:
        self._validate("finalize_invoice", message, FinalizeInvoice)

    # ------------------------------------------------------------------ queries

    @workflow.query(name="invoice")
    def invoice(self) -> PeriodView:
        return PeriodView(
            subscription_external_id=self._input.subscription_external_id,
            customer_external_id=self._settings.customer_external_id if self._settings else "",
            period_start=self._input.period_start,
            period_end=self._input.period_end,
            phase=self._phase,
            grace_period_ends_at=self._grace_ends_at,
            invoice=self._invoice,
            events_accepted=self._events_accepted,
            events_duplicated=self._events_duplicated,
            inputs_rejected=self._inputs_rejected,
            webhooks_delivered=self._webhooks_delivered,
            webhooks_failed=self._webhooks_failed,
        )

    @workflow.query(name="rejections")
    def rejections(self) -> list[Rejection]:
        return list(self._rejections)

    # ------------------------------------------------------------------ plumbing

    async def _store(
        self,
        activity: Any,
        request: BaseModel,
        *,
        summary: str,
        priority: Priority = Priority.default,
    ) -> Any:
        """Run a store activity; a permanent failure becomes an ``ApplicationError``.

        Regular activities, not local ones: with store steps as local activities, two
        worker processes under a month-end close stopped polling workflow tasks for good
        (bench/README.md, "Tried and reverted").
        """
        try:
            return await workflow.execute_activity_method(
                activity,
                request,
                start_to_close_timeout=STORE_TIMEOUT,
                retry_policy=STORE_RETRY_POLICY,
                summary=summary,
                priority=priority,
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError):
                raise ApplicationError(cause.message, type=cause.type, non_retryable=True) from None
            raise ApplicationError(
                f"{summary} failed: {cause}", type="StoreFailure", non_retryable=True
            ) from None

    def _reject(self, kind: str, reason: str, message: Any) -> None:
        self._sequence += 1
        self._inputs_rejected += 1
        if isinstance(message, BaseModel):
            excerpt = message.model_dump_json()[:500]
        elif isinstance(message, str) or message is None:
            excerpt = message or ""
        else:
            excerpt = _excerpt([message])
        rejection = Rejection(
            kind=kind, reason=reason, received_at=workflow.now(), payload_excerpt=excerpt
        )
        self._rejections.append(rejection)
        info = workflow.info()
        self._unstored_rejections.append(
            RecordRejectionRequest(
                key=f"{info.workflow_id}/{info.run_id}/{self._sequence}",
                source=info.workflow_id,
                kind=kind,
                payload=excerpt,
                reason=reason,
                subscription_external_id=self._input.subscription_external_id,
            )
        )
        workflow.logger.info("rejected %s: %s", kind, reason)

    async def _store_rejections(self) -> None:
        while self._unstored_rejections:
            request = self._unstored_rejections.pop(0)
            await self._store(
                InvoiceActivities.record_rejection,
                request,
                summary=f"record rejected {request.kind}",
            )

    def _should_continue_as_new(self) -> bool:
        return (
            workflow.info().is_continue_as_new_suggested()
            or self._signals_this_run >= self._input.max_signals_per_run
            or self._updates_this_run >= MAX_UPDATES_PER_RUN
        )

    async def _drained_for_handover(self) -> bool:
        """Apply every accepted input before continuing as new.

        False when a finalize request arrived meanwhile: finalizing comes first.
        """
        while True:
            await self._apply_queued_commands()
            await workflow.wait_condition(
                lambda: (
                    workflow.all_handlers_finished()
                    or bool(self._queue)
                    or self._finalize_requested
                )
            )
            if self._finalize_requested and self._phase == PeriodPhase.DRAFT:
                return False
            if not self._queue:
                await self._store_rejections()
                return workflow.all_handlers_finished() and not self._queue

    async def _continue_as_new(self) -> Invoice:
        carried = CarriedState(
            phase=self._phase,
            settings=self._settings,
            invoice=self._invoice,
            grace_period_ends_at=self._grace_ends_at,
            refresh_due_at=self._refresh_due_at,
            finalize_requested=self._finalize_requested,
            events_accepted=self._events_accepted,
            events_duplicated=self._events_duplicated,
            inputs_rejected=self._inputs_rejected,
            rejections=list(self._rejections),
            sequence=self._sequence,
        )
        workflow.continue_as_new(
            self._input.model_copy(update={"carried_state": carried.model_dump(mode="json")})
        )

    def _upsert_invoice_attributes(self) -> None:
        if self._invoice is None:
            return
        workflow.upsert_search_attributes(
            [
                search_attributes.INVOICE_STATUS.value_set(self._phase.value),
                search_attributes.INVOICE_NUMBER.value_set(self._invoice.number),
                search_attributes.TOTAL_CENTS.value_set(self._invoice.total_amount_cents),
            ]
        )

    def _show_details(self) -> None:
        """Current details in the UI: a short summary of the invoice."""
        lines = [f"**{self._phase.value}** · {self._input.subscription_external_id}"]
        if self._settings is not None:
            lines.append(f"period {self._settings.period_label} ({self._settings.timezone})")
        if self._grace_ends_at is not None and self._phase == PeriodPhase.DRAFT:
            lines.append(f"grace period ends {self._grace_ends_at.isoformat()}")
        invoice = self._invoice
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
            f"events accepted {self._events_accepted}, duplicates {self._events_duplicated}, "
            f"inputs rejected {self._inputs_rejected}"
        )
        workflow.set_current_details("\n".join(lines))


def _receipt(result: RecordUsageResult) -> UsageReceipt:
    return UsageReceipt(
        accepted=result.accepted,
        duplicates=result.duplicates,
        rejected=[
            UsageRejection(transaction_id=r.transaction_id, code=r.code, reason=r.reason)
            for r in result.rejected
        ],
    )


def _short_error(err: Exception) -> str:
    if isinstance(err, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}"
            for e in err.errors()[:5]
        )
    return str(err)[:300]


def _batch_size(payload: Any) -> int:
    events = payload.get("events") if isinstance(payload, dict) else None
    return len(events) if isinstance(events, list) else 0


def _decoded(arg: Any) -> Any:
    """Signal arguments arrive as decoded JSON; dynamic handlers get raw payloads."""
    if isinstance(arg, RawValue):
        return workflow.payload_converter().from_payload(arg.payload)
    return arg


def _excerpt(args: Sequence[Any]) -> str:
    try:
        return json.dumps([_decoded(a) for a in args], default=str)[:500]
    except Exception:  # an excerpt is best effort: the rejection itself must be recorded
        return f"<{len(args)} undecodable payload(s)>"
