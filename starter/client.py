"""A typed Python client for other systems: the operations of the ``billing`` CLI.

Usage::

    client = await config.temporal.connect(settings)
    billing = BillingClient(client, make_engine(settings.database_url),
                            task_queue=settings.task_queue)
    report = await billing.send_usage([UsageEvent(...), ...])
    print(report.accepted, report.duplicates, report.rejected)
    invoice = await billing.edit_fee("sub_1", date(2026, 1, 1), EditFee(...))

Starting: every period starts through :mod:`starter.periods` (the one start path and its
conflict policy): a second start finds the running period, a completed one is never
billed twice.

Routing: every usage event goes to the workflow of the period that contains its
timestamp in the customer's timezone (:func:`billing.periods.billing_period` with the
plan's interval). Each period's events are delivered with update-with-start
(``add_usage_sync``, the same start), so the workflow starts when needed and the sender
gets a per-event answer. Events for an invoice already finalized (or closed) are rejected
without starting anything.

Reads come from the workflow while it runs (``invoice`` query), else from the store.
Coupons, wallet top-ups and the lists of invoices and webhooks only touch the store: a
client built with ``client=None`` serves them without a Temporal connection.
Errors are the :mod:`starter.errors` hierarchy.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any, NoReturn

import sqlalchemy
from pydantic import BaseModel
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.webhooks import DeliveryResult
from billing.errors import NotFound
from billing.models import (
    BillingContext,
    Invoice,
    RejectedEvent,
    UsageEvent,
    UsageReceipt,
)
from billing.periods import billing_period, period_ending_on, period_starting
from starter.bulk import DEFAULT_CONCURRENCY
from starter.errors import (
    BillingClientError,
    InvalidRequest,
    NoBillingPeriod,
    Refused,
    UnknownSubscription,
)
from starter.grace_periods import FollowReport, follow_settings
from starter.periods import (
    give_operator_priority,
    period_workflow_id,
    start_period,
    start_period_operation,
    was_started,
)
from starter.results import (
    InvoiceSnapshot,
    LaunchOutcome,
    LaunchStatus,
    LaunchSummary,
    PeriodDelivery,
    PeriodRef,
    UsageReport,
)
from starter.store_access import StoreAccess
from starter.translate import DONE, closed_reason, describe, not_editable, raise_translated
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import (
    MAX_USAGE_BATCH,
    AddUsage,
    BillingPeriodInput,
    EditFee,
    FinalizeInvoice,
    PeriodPhase,
    PeriodView,
    RefreshInvoice,
    RemoveFeeAdjustment,
)

__all__ = [
    "BillingClient",
    "InvoiceSnapshot",
    "LaunchOutcome",
    "LaunchStatus",
    "LaunchSummary",
    "PeriodDelivery",
    "PeriodRef",
    "UsageReport",
]


class BillingClient(StoreAccess):
    """Launch periods, send usage, edit fees and inspect invoices (see the module doc)."""

    def __init__(
        self,
        client: Client | None,
        engine: sqlalchemy.Engine,
        *,
        task_queue: str,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(engine)
        self._client = client
        self.task_queue = task_queue
        self._now = clock or (lambda: datetime.now(UTC))

    @property
    def client(self) -> Client:
        """The Temporal client (a client built with ``client=None`` serves the store only)."""
        if self._client is None:
            raise Refused("this BillingClient has no Temporal connection")
        return self._client

    # ------------------------------------------------------------------ periods

    def period(
        self, subscription_external_id: str, period_start: date | datetime | None = None
    ) -> PeriodRef:
        """The period starting on the local date ``period_start`` (default: containing now).

        A ``datetime`` means the period containing that instant.
        """
        context = self.context(subscription_external_id)
        interval = context.plan.interval
        if period_start is None:
            start, end = billing_period(self._now(), context.timezone, interval)
        elif isinstance(period_start, datetime):
            start, end = billing_period(period_start, context.timezone, interval)
        else:
            try:
                start, end = period_starting(period_start, context.timezone, interval)
            except ValueError as err:
                raise InvalidRequest(
                    f"{err} (subscription {subscription_external_id}, plan "
                    f"{context.plan.code}): pass the period's first day"
                ) from None
        return self._ref(context, start, end)

    def _ref(self, context: BillingContext, start: datetime, end: datetime) -> PeriodRef:
        subscription_external_id = context.subscription.external_id
        return PeriodRef(
            subscription_external_id=subscription_external_id,
            customer_external_id=context.customer.external_id,
            timezone=context.timezone,
            period_start=start,
            period_end=end,
            workflow_id=period_workflow_id(subscription_external_id, start, context.timezone),
        )

    def _input(self, ref: PeriodRef, grace_period_seconds: int | None) -> BillingPeriodInput:
        return BillingPeriodInput(
            subscription_external_id=ref.subscription_external_id,
            customer_external_id=ref.customer_external_id,
            period_start=ref.period_start,
            period_end=ref.period_end,
            grace_period_seconds=grace_period_seconds,
        )

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
        base: dict[str, Any] = {
            "subscription_external_id": subscription_external_id,
            "workflow_id": ref.workflow_id,
            "period": ref.label,
        }
        existing = await self.find_invoice(ref.subscription_external_id, ref.period_start)
        if existing is not None and existing.status in DONE:
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
        status = LaunchStatus.STARTED if was_started(handle) else LaunchStatus.ALREADY_RUNNING
        return LaunchOutcome(**base, status=status)

    def periods_ending(self, period_end_date: date) -> list[PeriodRef]:
        """Every subscription's period whose last local day is ``period_end_date``.

        Subscriptions that start after that period or ended before it are left out.
        """
        refs: list[PeriodRef] = []
        for subscription in self.subscriptions():
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
        semaphore = asyncio.Semaphore(max(1, concurrency))

        async def launch(ref: PeriodRef) -> LaunchOutcome:
            async with semaphore:
                try:
                    outcome = await self.start_period(
                        ref.subscription_external_id, ref.local_start, grace_period_seconds
                    )
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
    ) -> UsageReport:
        """Route each event to its period's workflow (started when needed); see module doc.

        ``grace_period_seconds`` applies only to workflows this call starts.
        """
        rejected: list[RejectedEvent] = []
        groups: dict[str, list[UsageEvent]] = defaultdict(list)
        refs: dict[str, PeriodRef] = {}
        for event in events:
            try:
                ref = self.period(event.external_subscription_id, event.timestamp)
            except UnknownSubscription as err:
                rejected.append(_rejection(event, str(err)))
                continue
            refs[ref.workflow_id] = ref
            groups[ref.workflow_id].append(event)

        semaphore = asyncio.Semaphore(max(1, concurrency))

        async def deliver(ref: PeriodRef, batch: list[UsageEvent]) -> PeriodDelivery:
            async with semaphore:
                return await self._deliver_usage(ref, batch, grace_period_seconds, rejected)

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
    ) -> PeriodDelivery:
        delivery = PeriodDelivery(
            workflow_id=ref.workflow_id,
            subscription_external_id=ref.subscription_external_id,
            period=ref.label,
        )

        def refuse(reason: str) -> PeriodDelivery:
            rejected.extend(_rejection(event, reason) for event in batch)
            return delivery.model_copy(update={"rejected": len(batch)})

        invoice = await self.find_invoice(ref.subscription_external_id, ref.period_start)
        if invoice is not None and invoice.status in DONE:
            return refuse(not_editable(invoice))
        operation = start_period_operation(
            self._input(ref, grace_period_seconds),
            task_queue=self.task_queue,
            timezone=ref.timezone,
        )
        try:
            receipt: UsageReceipt = await self.client.execute_update_with_start_workflow(
                "add_usage_sync",
                AddUsage(events=batch),
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
        self, subscription_external_id: str, period_start: date | None, edit: EditFee
    ) -> Invoice:
        """Adjust a fee on the period's draft (``edit_fee_sync``); returns the draft."""
        ref = self.period(subscription_external_id, period_start)
        return await self._update(ref, BillingPeriodWorkflow.edit_fee_sync, edit)

    async def remove_fee_adjustment(
        self, subscription_external_id: str, period_start: date | None, charge_code: str
    ) -> Invoice:
        ref = self.period(subscription_external_id, period_start)
        return await self._update(
            ref,
            BillingPeriodWorkflow.remove_fee_adjustment_sync,
            RemoveFeeAdjustment(charge_code=charge_code),
        )

    async def refresh_invoice(
        self, subscription_external_id: str, period_start: date | None = None, reason: str = ""
    ) -> Invoice:
        ref = self.period(subscription_external_id, period_start)
        return await self._update(
            ref, BillingPeriodWorkflow.refresh_invoice_sync, RefreshInvoice(reason=reason)
        )

    async def finalize_invoice(
        self, subscription_external_id: str, period_start: date | None = None, reason: str = ""
    ) -> Invoice:
        """End the grace period now; returns the finalized (or closed) invoice."""
        ref = self.period(subscription_external_id, period_start)
        return await self._update(
            ref, BillingPeriodWorkflow.finalize_invoice_sync, FinalizeInvoice(reason=reason)
        )

    # ------------------------------------------------------------------ reads

    async def show_invoice(
        self, subscription_external_id: str, period_start: date | None = None
    ) -> InvoiceSnapshot:
        """The running workflow's view, else the stored invoice."""
        ref = self.period(subscription_external_id, period_start)
        handle = self.client.get_workflow_handle_for(BillingPeriodWorkflow.run, ref.workflow_id)
        running = False
        try:
            description = await handle.describe()
            running = description.status == WorkflowExecutionStatus.RUNNING
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise Refused(f"cannot reach Temporal: {err.message}") from None
        if running:
            view: PeriodView = await handle.query(BillingPeriodWorkflow.invoice)
            return InvoiceSnapshot(
                workflow_id=ref.workflow_id,
                subscription_external_id=subscription_external_id,
                phase=view.phase,
                period_start=view.period_start,
                period_end=view.period_end,
                grace_period_ends_at=view.grace_period_ends_at,
                invoice=view.invoice,
                source="workflow",
            )
        invoice = await self.find_invoice(ref.subscription_external_id, ref.period_start)
        if invoice is None:
            raise NoBillingPeriod(ref.workflow_id)
        return InvoiceSnapshot(
            workflow_id=ref.workflow_id,
            subscription_external_id=subscription_external_id,
            phase=PeriodPhase(invoice.status.value),
            period_start=invoice.period_start,
            period_end=invoice.period_end,
            invoice=invoice,
            source="store",
        )

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

    async def follow_settings(self, requested_by: str | None = None) -> FollowReport:
        """Nudge the running drafts whose grace period changed (:mod:`starter.grace_periods`)."""
        return await follow_settings(self.client, self.engine, requested_by=requested_by)

    # ------------------------------------------------------------------ helpers

    async def _raise_translated(self, err: BaseException, ref: PeriodRef) -> NoReturn:
        await raise_translated(
            err,
            ref.workflow_id,
            lambda: self.find_invoice(ref.subscription_external_id, ref.period_start),
        )


def _rejection(event: UsageEvent, reason: str) -> RejectedEvent:
    return RejectedEvent(transaction_id=event.transaction_id, code=event.code, reason=reason)
