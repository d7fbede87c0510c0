"""A typed Python client for other systems: the operations of the ``billing`` CLI.

Usage::

    client = await config.temporal.connect(settings)
    billing = BillingClient(client, make_engine(settings.database_url),
                            task_queue=settings.task_queue)
    report = await billing.send_usage([UsageEvent(...), ...])
    print(report.accepted, report.duplicates, report.rejected)
    invoice = await billing.edit_fee("sub_1", date(2026, 1, 1), EditFee(...),
                                     requested_by="alice")
    preview = await billing.preview_invoice("sub_1", date(2026, 1, 1))
    final = await billing.approve_invoice("sub_1", date(2026, 1, 1), note="checked",
                                          requested_by="alice")
    timeline = await billing.invoice_timeline("sub_1", date(2026, 1, 1))

Starting: every period starts through :mod:`starter.periods` (the one start path and its
conflict policy): a second start finds the running period, a completed one is never
billed twice.

Routing: every usage event goes to the workflow of the period that contains its
timestamp in the customer's timezone (:func:`billing.periods.billing_period` with the
plan's interval). Each period's events are delivered with update-with-start
(``add_usage_sync``, the same start), so the workflow starts when needed and the sender
gets a per-event answer. Events for an invoice already finalized (or closed) are rejected
without starting anything.

Reads (show, preview, timeline) are :class:`starter.period_access.PeriodAccess`'s: the
invoice from the workflow while it runs (query ``invoice``), else from the store; the
preview and the timeline from the store.
Every change names who asked for it (``requested_by``, written to the invoice timeline).
Coupons, wallet top-ups and the lists of invoices and webhooks only touch the store: a
client built with ``client=None`` serves them without a Temporal connection.
Errors are the :mod:`starter.errors` hierarchy.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.webhooks import DeliveryResult
from billing.errors import NotFound
from billing.models import Invoice, InvoiceStatus, RejectedEvent, UsageEvent, UsageReceipt
from billing.periods import period_ending_on
from starter.bulk import DEFAULT_CONCURRENCY
from starter.customer_drafts import customer_draft_workflows, refresh_customer_drafts
from starter.errors import (
    BillingClientError,
    InvalidRequest,
    InvoiceFinalized,
    Refused,
    UnknownSubscription,
)
from starter.grace_periods import FollowReport, follow_settings
from starter.period_access import PeriodAccess
from starter.periods import (
    give_operator_priority,
    start_period,
    start_period_operation,
    was_started,
)
from starter.results import (
    InvoiceSnapshot,
    InvoiceTimeline,
    LaunchOutcome,
    LaunchStatus,
    LaunchSummary,
    PeriodDelivery,
    PeriodRef,
    UsageReport,
)
from starter.translate import DONE, closed_reason, describe
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import (
    MAX_USAGE_BATCH,
    AddUsage,
    ApproveInvoice,
    EditFee,
    FinalizeInvoice,
    RefreshInvoice,
    RemoveFeeAdjustment,
)

M = TypeVar("M", bound=BaseModel)

__all__ = [
    "BillingClient",
    "InvoiceSnapshot",
    "InvoiceTimeline",
    "LaunchOutcome",
    "LaunchStatus",
    "LaunchSummary",
    "PeriodDelivery",
    "PeriodRef",
    "UsageReport",
]


class BillingClient(PeriodAccess):
    """Launch periods, send usage, edit fees and inspect invoices (see the module doc).

    Every change takes ``requested_by``: who asks (a person or a system's name), sent in
    the payload and written to the invoice timeline.
    """

    async def start_period(
        self,
        subscription_external_id: str,
        period_start: date | None = None,
        grace_period_seconds: int | None = None,
    ) -> LaunchOutcome:
        """Start the period's workflow; a second launch reports it already running.

        Never bills a period twice: an invoice finalized or closed in the store, or a
        workflow that completed, is reported as ``finalized`` (:mod:`starter.periods`).
        """
        ref = self.period(subscription_external_id, period_start)
        period = (ref.subscription_external_id, ref.period_start)
        statuses = await self.period_statuses([period])
        return await self._start(ref, grace_period_seconds, statuses.get(period))

    async def _start(
        self, ref: PeriodRef, grace_period_seconds: int | None, status: InvoiceStatus | None
    ) -> LaunchOutcome:
        """Start ``ref``'s workflow unless its invoice (``status``, read before) is done."""
        base: dict[str, Any] = {
            "subscription_external_id": ref.subscription_external_id,
            "workflow_id": ref.workflow_id,
            "period": ref.label,
        }
        if status in DONE:
            return LaunchOutcome(**base, status=LaunchStatus.FINALIZED)
        try:
            handle = await start_period(
                self.client,
                self._input(ref, grace_period_seconds),
                task_queue=self.task_queue,
                timezone=ref.timezone,
            )
        except WorkflowAlreadyStartedError:  # the period's workflow completed
            return LaunchOutcome(**base, status=LaunchStatus.FINALIZED)
        started = was_started(handle)
        return LaunchOutcome(
            **base, status=LaunchStatus.STARTED if started else LaunchStatus.ALREADY_RUNNING
        )

    def periods_ending(self, period_end_date: date) -> list[PeriodRef]:
        """Every subscription's period whose last local day is ``period_end_date``.

        Subscriptions that start after that period or ended before it are left out.
        """
        refs: list[PeriodRef] = []
        subscriptions = self.subscriptions()
        self.load_contexts(subscription.external_id for subscription in subscriptions)
        for subscription in subscriptions:
            context = self.context(subscription.external_id)
            bounds = period_ending_on(
                subscription, period_end_date, context.timezone, context.plan.interval
            )
            if bounds is not None:
                refs.append(self._ref(context, *bounds))
        return refs

    async def start_all(
        self,
        period_end_date: date,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        grace_period_seconds: int | None = None,
        on_outcome: Any = None,
    ) -> LaunchSummary:
        """Launch the period of every subscription that ends on ``period_end_date``.

        Concurrent (at most ``concurrency`` starts in flight) and idempotent: a second
        run reports every period already running (or finalized). One failure does not
        stop the others; it is reported with its error. ``on_outcome(outcome, total)`` is
        called after each launch (the CLI's progress bar).
        """
        refs = await asyncio.to_thread(self.periods_ending, period_end_date)
        statuses = await self.period_statuses(
            (ref.subscription_external_id, ref.period_start) for ref in refs
        )
        semaphore = asyncio.Semaphore(max(1, concurrency))

        async def launch(ref: PeriodRef) -> LaunchOutcome:
            status = statuses.get((ref.subscription_external_id, ref.period_start))
            async with semaphore:
                try:
                    outcome = await self._start(ref, grace_period_seconds, status)
                except Exception as err:  # reported per item; the others still launch
                    outcome = LaunchOutcome(
                        subscription_external_id=ref.subscription_external_id,
                        workflow_id=ref.workflow_id,
                        period=ref.label,
                        status=LaunchStatus.FAILED,
                        error=describe(err),
                    )
            if on_outcome is not None:
                on_outcome(outcome, len(refs))
            return outcome

        outcomes = await asyncio.gather(*(launch(ref) for ref in refs))
        return LaunchSummary(period_end_date=period_end_date, outcomes=list(outcomes))

    # ------------------------------------------------------------------ usage

    async def send_usage(
        self,
        events: Sequence[UsageEvent],
        *,
        grace_period_seconds: int | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        requested_by: str | None = None,
    ) -> UsageReport:
        """Route each event to its period's workflow (started when needed); see module doc.

        ``grace_period_seconds`` applies only to workflows this call starts.
        """
        if requested_by is not None:  # every mutation's rule for it, checked once
            _message(RefreshInvoice, requested_by=requested_by)
        rejected: list[RejectedEvent] = []
        groups: dict[str, list[UsageEvent]] = defaultdict(list)
        refs: dict[str, PeriodRef] = {}
        self.load_contexts(event.external_subscription_id for event in events)
        for event in events:
            try:
                ref = self.period(event.external_subscription_id, event.timestamp)
            except UnknownSubscription as err:
                rejected.append(_rejection(event, str(err)))
                continue
            refs[ref.workflow_id] = ref
            groups[ref.workflow_id].append(event)

        statuses = await self.period_statuses(
            (ref.subscription_external_id, ref.period_start) for ref in refs.values()
        )
        semaphore = asyncio.Semaphore(max(1, concurrency))

        async def deliver(ref: PeriodRef, batch: list[UsageEvent]) -> PeriodDelivery:
            status = statuses.get((ref.subscription_external_id, ref.period_start))
            async with semaphore:
                return await self._deliver_usage(
                    ref, batch, grace_period_seconds, rejected, requested_by, status
                )

        deliveries = await asyncio.gather(
            *(
                deliver(refs[workflow_id], group[i : i + MAX_USAGE_BATCH])
                for workflow_id, group in groups.items()
                for i in range(0, len(group), MAX_USAGE_BATCH)
            )
        )
        return UsageReport.merge(deliveries, rejected)

    async def _deliver_usage(
        self,
        ref: PeriodRef,
        batch: list[UsageEvent],
        grace_period_seconds: int | None,
        rejected: list[RejectedEvent],
        requested_by: str | None,
        status: InvoiceStatus | None,
    ) -> PeriodDelivery:
        """Send one batch to its period (``status``: its invoice's, read before sending)."""
        delivery = PeriodDelivery(
            workflow_id=ref.workflow_id,
            subscription_external_id=ref.subscription_external_id,
            period=ref.label,
        )

        def refuse(reason: str) -> PeriodDelivery:
            rejected.extend(_rejection(event, reason) for event in batch)
            return delivery.model_copy(update={"rejected": len(batch)})

        if status in DONE:
            invoice = await self.find_invoice(ref.subscription_external_id, ref.period_start)
            return refuse(closed_reason(ref.workflow_id, invoice))
        operation = start_period_operation(
            self._input(ref, grace_period_seconds),
            task_queue=self.task_queue,
            timezone=ref.timezone,
        )
        try:
            receipt: UsageReceipt = await self.client.execute_update_with_start_workflow(
                "add_usage_sync",
                AddUsage(events=batch, requested_by=requested_by),
                start_workflow_operation=operation,
                result_type=UsageReceipt,
            )
        except WorkflowAlreadyStartedError:  # the period's workflow completed
            return refuse(
                closed_reason(
                    ref.workflow_id,
                    await self.find_invoice(ref.subscription_external_id, ref.period_start),
                )
            )
        except Exception as err:
            try:
                await self._raise_translated(err, ref)
            except BillingClientError as translated:
                return refuse(str(translated))
            raise  # pragma: no cover - _raise_translated always raises
        rejected.extend(receipt.rejected)
        return delivery.model_copy(
            update={
                "accepted": receipt.accepted,
                "duplicates": receipt.duplicates,
                "rejected": len(receipt.rejected),
            }
        )

    # ------------------------------------------------------------------ draft changes

    async def _update(self, ref: PeriodRef, update: Any, message: BaseModel) -> Invoice:
        handle = self.client.get_workflow_handle_for(BillingPeriodWorkflow.run, ref.workflow_id)
        await give_operator_priority(self.client, ref.workflow_id)
        try:
            result: Invoice = await handle.execute_update(update, message)
        except Exception as err:
            await self._raise_translated(err, ref)
        return result

    async def edit_fee(
        self,
        subscription_external_id: str,
        period_start: date | None,
        edit: EditFee,
        *,
        requested_by: str | None = None,
    ) -> Invoice:
        """Adjust a fee on the period's draft (``edit_fee_sync``); returns the draft.

        ``requested_by`` (when given) replaces the edit's own.
        """
        ref = self.period(subscription_external_id, period_start)
        if requested_by is not None:
            edit = _message(EditFee, **{**edit.model_dump(), "requested_by": requested_by})
        return await self._update(ref, BillingPeriodWorkflow.edit_fee_sync, edit)

    async def remove_fee_adjustment(
        self,
        subscription_external_id: str,
        period_start: date | None,
        charge_code: str,
        *,
        requested_by: str | None = None,
    ) -> Invoice:
        """Restore the computed fee of ``charge_code``; returns the draft."""
        ref = self.period(subscription_external_id, period_start)
        message = _message(RemoveFeeAdjustment, charge_code=charge_code, requested_by=requested_by)
        return await self._update(ref, BillingPeriodWorkflow.remove_fee_adjustment_sync, message)

    async def refresh_invoice(
        self,
        subscription_external_id: str,
        period_start: date | None = None,
        reason: str = "",
        *,
        requested_by: str | None = None,
    ) -> Invoice:
        ref = self.period(subscription_external_id, period_start)
        message = _message(RefreshInvoice, reason=reason, requested_by=requested_by)
        return await self._update(ref, BillingPeriodWorkflow.refresh_invoice_sync, message)

    async def finalize_invoice(
        self,
        subscription_external_id: str,
        period_start: date | None = None,
        reason: str = "",
        *,
        requested_by: str | None = None,
    ) -> Invoice:
        """End the grace period now; returns the finalized (or closed) invoice, or the
        draft held for approval when an approval rule matches (``invoice.approval``)."""
        ref = self.period(subscription_external_id, period_start)
        message = _message(FinalizeInvoice, reason=reason, requested_by=requested_by)
        return await self._update(ref, BillingPeriodWorkflow.finalize_invoice_sync, message)

    async def approve_invoice(
        self,
        subscription_external_id: str,
        period_start: date | None = None,
        note: str | None = None,
        requested_by: str | None = None,
    ) -> Invoice:
        """Approve the period's invoice and finalize it now (``approve_invoice_sync``).

        A held invoice is finalized with ``approval.status`` ``approved`` (by
        ``requested_by``, with ``note``); a draft that needs no approval is finalized as
        ``not_required``. A finalized or closed invoice raises :class:`InvoiceFinalized`.
        """
        ref = self.period(subscription_external_id, period_start)
        message = _message(ApproveInvoice, note=note, requested_by=requested_by)
        try:
            return await self._update(ref, BillingPeriodWorkflow.approve_invoice_sync, message)
        except InvoiceFinalized as err:
            raise InvoiceFinalized(f"nothing to approve: {err}") from None

    # ------------------------------------------------------------------ webhooks

    async def retry_webhook(self, delivery_id: str) -> DeliveryResult:
        """Deliver a (failed) webhook again and wait for the outcome."""
        from starter.webhooks import retry_delivery

        try:
            return await retry_delivery(
                self.client, self.engine, delivery_id, task_queue=self.task_queue
            )
        except NotFound:
            raise Refused(
                f"no webhook delivery {delivery_id!r}: `billing webhook list` shows the ids"
            ) from None

    async def refresh_customer_drafts(
        self, customer_external_id: str, requested_by: str | None = None
    ) -> int:
        """Refresh the customer's running drafts, so that their ``preview`` query includes a
        coupon or credits just given; how many were running."""
        ids = await asyncio.to_thread(customer_draft_workflows, self.engine, customer_external_id)
        return await refresh_customer_drafts(self.client, ids, requested_by=requested_by)

    async def follow_settings(self, requested_by: str | None = None) -> FollowReport:
        """Nudge the running drafts whose grace period changed (:mod:`starter.grace_periods`)."""
        return await follow_settings(self.client, self.engine, requested_by=requested_by)


def _rejection(event: UsageEvent, reason: str) -> RejectedEvent:
    return RejectedEvent(transaction_id=event.transaction_id, code=event.code, reason=reason)


def _message(model: type[M], **fields: Any) -> M:
    """A payload built here; a field the workflow would refuse is an ``InvalidRequest``."""
    try:
        return model(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRequest(f"invalid {where or model.__name__}: {first['msg']}") from None
