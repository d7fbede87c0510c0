"""A typed Python client for other systems: the operations of the ``billing`` CLI.

Usage::

    client = await config.temporal.connect(settings)
    billing = BillingClient(client, make_engine(settings.database_url),
                            task_queue=settings.task_queue)
    report = await billing.send_usage([UsageEvent(...), ...])
    print(report.accepted, report.duplicates, report.rejected)
    invoice = await billing.edit_fee("sub_1", date(2026, 1, 1), EditFee(...))

Routing: every usage event goes to the workflow of the period that contains its
timestamp in the customer's timezone (:func:`billing.periods.billing_period` with the
plan's interval). Each period's events are delivered with update-with-start
(``add_usage_sync``, conflict policy USE_EXISTING), so the workflow starts when needed and
the sender gets a per-event answer. Events for an invoice already finalized (or closed)
are rejected without starting anything.

Reads come from the workflow while it runs (``invoice`` query), else from the store.
Coupons and wallet top-ups go to the store: they only matter at finalization.
Errors are the :mod:`starter.errors` hierarchy.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal, NoReturn
from zoneinfo import ZoneInfo

import sqlalchemy
from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.webhooks import DeliveryResult
from billing.errors import NotFound
from billing.models import AppliedCoupon, Invoice, InvoiceStatus, UsageEvent, Wallet
from billing.periods import billing_period, describe_period, period_starting
from starter.errors import (
    BillingClientError,
    InvalidRequest,
    InvoiceFinalized,
    NoBillingPeriod,
    Refused,
    UnknownSubscription,
)
from starter.periods import period_workflow_id
from store import catalog as catalog_store
from store import invoices as invoice_store
from store import webhooks as delivery_log
from store._rows import BillingContext
from store.webhooks import WebhookDelivery
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
    UsageReceipt,
    UsageRejection,
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
    "period_end_matches",
]

DEFAULT_CONCURRENCY = 8
DeliveryStatus = Literal["pending", "retrying", "succeeded", "failed"]
_DONE = (InvoiceStatus.FINALIZED, InvoiceStatus.CLOSED)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class PeriodRef(_Model):
    """One billing period of one subscription, with its workflow id."""

    subscription_external_id: str
    customer_external_id: str
    timezone: str
    period_start: datetime
    period_end: datetime
    workflow_id: str

    @property
    def label(self) -> str:
        return describe_period(self.period_start, self.period_end, self.timezone)

    @property
    def local_start(self) -> date:
        return self.period_start.astimezone(ZoneInfo(self.timezone)).date()


class LaunchStatus(StrEnum):
    STARTED = "started"
    ALREADY_RUNNING = "already_running"
    FINALIZED = "finalized"  # finalized or closed: nothing left to launch
    FAILED = "failed"


class LaunchOutcome(_Model):
    subscription_external_id: str
    workflow_id: str = ""
    period: str = ""
    status: LaunchStatus
    error: str | None = None


class LaunchSummary(_Model):
    period_end_date: date
    outcomes: list[LaunchOutcome] = Field(default_factory=list)

    def count(self, status: LaunchStatus) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    @property
    def failed(self) -> list[LaunchOutcome]:
        return [o for o in self.outcomes if o.status == LaunchStatus.FAILED]


class PeriodDelivery(_Model):
    """What one period's workflow answered for the events routed to it."""

    workflow_id: str
    subscription_external_id: str
    period: str
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0


class UsageReport(_Model):
    accepted: int = 0
    duplicates: int = 0
    rejected: list[UsageRejection] = Field(default_factory=list)
    periods: list[PeriodDelivery] = Field(default_factory=list)


class InvoiceSnapshot(_Model):
    """A period as the operator sees it: from the running workflow or from the store."""

    workflow_id: str
    subscription_external_id: str
    phase: PeriodPhase
    period_start: datetime
    period_end: datetime
    grace_period_ends_at: datetime | None = None
    invoice: Invoice | None = None
    source: str  # "workflow" or "store"


def period_end_matches(ref: PeriodRef, period_end_date: date) -> bool:
    """True when the period's last local day is ``period_end_date``."""
    last = (ref.period_end - timedelta(microseconds=1)).astimezone(ZoneInfo(ref.timezone)).date()
    return last == period_end_date


class BillingClient:
    """Launch periods, send usage, edit fees and inspect invoices (see the module doc)."""

    def __init__(
        self,
        client: Client,
        engine: sqlalchemy.Engine,
        *,
        task_queue: str,
        clock: Any = None,
    ) -> None:
        self.client = client
        self.engine = engine
        self.task_queue = task_queue
        self._now = clock or (lambda: datetime.now(UTC))
        self._contexts: dict[str, BillingContext] = {}

    # ------------------------------------------------------------------ periods

    def context(self, subscription_external_id: str) -> BillingContext:
        """The subscription's billing context (cached for this client)."""
        cached = self._contexts.get(subscription_external_id)
        if cached is not None:
            return cached
        try:
            context = catalog_store.get_billing_context(self.engine, subscription_external_id)
        except NotFound:
            raise UnknownSubscription(subscription_external_id) from None
        self._contexts[subscription_external_id] = context
        return context

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
            period_start=ref.period_start,
            period_end=ref.period_end,
            grace_period_seconds=grace_period_seconds,
        )

    def _summary(self, ref: PeriodRef) -> str:
        return f"Billing period {ref.label} of {ref.subscription_external_id}"

    async def start_period(
        self,
        subscription_external_id: str,
        period_start: date | None = None,
        grace_period_seconds: int | None = None,
    ) -> LaunchOutcome:
        """Start the period's workflow; a second launch reports it already running.

        Never bills a period twice: an invoice finalized or closed in the store, or a
        workflow that completed, is reported as ``finalized``.
        """
        ref = self.period(subscription_external_id, period_start)
        base: dict[str, Any] = {
            "subscription_external_id": subscription_external_id,
            "workflow_id": ref.workflow_id,
            "period": ref.label,
        }
        existing = await asyncio.to_thread(
            invoice_store.find_invoice, self.engine, subscription_external_id, ref.period_start
        )
        if existing is not None and existing.status in _DONE:
            return LaunchOutcome(**base, status=LaunchStatus.FINALIZED)
        try:
            await self.client.start_workflow(
                BillingPeriodWorkflow.run,
                self._input(ref, grace_period_seconds),
                id=ref.workflow_id,
                task_queue=self.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                static_summary=self._summary(ref),
            )
        except WorkflowAlreadyStartedError:
            description = await self.client.get_workflow_handle(ref.workflow_id).describe()
            status = (
                LaunchStatus.ALREADY_RUNNING
                if description.status == WorkflowExecutionStatus.RUNNING
                else LaunchStatus.FINALIZED
            )
            return LaunchOutcome(**base, status=status)
        return LaunchOutcome(**base, status=LaunchStatus.STARTED)

    def periods_ending(self, period_end_date: date) -> list[PeriodRef]:
        """Every subscription's period whose last local day is ``period_end_date``.

        Subscriptions that start after that period or ended before it are left out.
        """
        refs: list[PeriodRef] = []
        for subscription in catalog_store.list_subscriptions(self.engine):
            context = self.context(subscription.external_id)
            noon = datetime(
                period_end_date.year,
                period_end_date.month,
                period_end_date.day,
                12,
                tzinfo=ZoneInfo(context.timezone),
            )
            ref = self.period(subscription.external_id, noon)
            if not period_end_matches(ref, period_end_date):
                continue
            if subscription.started_at >= ref.period_end:
                continue
            if subscription.terminated_at is not None and subscription.terminated_at <= (
                ref.period_start
            ):
                continue
            refs.append(ref)
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
                        error=_describe(err),
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
        rejected: list[UsageRejection] = []
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
        merged: dict[str, PeriodDelivery] = {}
        for delivery in deliveries:
            previous = merged.get(delivery.workflow_id)
            if previous is not None:
                delivery = previous.model_copy(
                    update={
                        "accepted": previous.accepted + delivery.accepted,
                        "duplicates": previous.duplicates + delivery.duplicates,
                        "rejected": previous.rejected + delivery.rejected,
                    }
                )
            merged[delivery.workflow_id] = delivery
        return UsageReport(
            accepted=sum(d.accepted for d in merged.values()),
            duplicates=sum(d.duplicates for d in merged.values()),
            rejected=rejected,
            periods=list(merged.values()),
        )

    async def _deliver_usage(
        self,
        ref: PeriodRef,
        batch: list[UsageEvent],
        grace_period_seconds: int | None,
        rejected: list[UsageRejection],
    ) -> PeriodDelivery:
        delivery = PeriodDelivery(
            workflow_id=ref.workflow_id,
            subscription_external_id=ref.subscription_external_id,
            period=ref.label,
        )

        def refuse(reason: str) -> PeriodDelivery:
            rejected.extend(_rejection(event, reason) for event in batch)
            return delivery.model_copy(update={"rejected": len(batch)})

        invoice = await asyncio.to_thread(
            invoice_store.find_invoice, self.engine, ref.subscription_external_id, ref.period_start
        )
        if invoice is not None and invoice.status in _DONE:
            return refuse(_not_editable(invoice))
        operation = WithStartWorkflowOperation(
            BillingPeriodWorkflow.run,
            self._input(ref, grace_period_seconds),
            id=ref.workflow_id,
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            static_summary=self._summary(ref),
        )
        try:
            receipt: UsageReceipt = await self.client.execute_update_with_start_workflow(
                "add_usage_sync",
                AddUsage(events=batch),
                start_workflow_operation=operation,
                result_type=UsageReceipt,
            )
        except WorkflowAlreadyStartedError:  # the period's workflow completed
            return refuse(await self._closed_reason(ref))
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
        invoice = await asyncio.to_thread(
            invoice_store.find_invoice, self.engine, subscription_external_id, ref.period_start
        )
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

    def list_invoices(
        self,
        *,
        customer_external_id: str | None = None,
        subscription_external_id: str | None = None,
        status: InvoiceStatus | str | None = None,
    ) -> list[Invoice]:
        return invoice_store.list_invoices(
            self.engine,
            customer_external_id=customer_external_id,
            subscription_external_id=subscription_external_id,
            status=status,
        )

    # ------------------------------------------------------------------ coupons, wallets

    def apply_coupon(
        self,
        customer_external_id: str,
        coupon_code: str,
        *,
        applied_coupon_id: str,
        amount_cents: int | None = None,
        percentage_rate: Decimal | None = None,
    ) -> AppliedCoupon:
        """Give a coupon to a customer (idempotent on ``applied_coupon_id``).

        It is applied at the customer's next finalization, never to a draft.
        """
        try:
            return catalog_store.apply_coupon(
                self.engine,
                customer_external_id=customer_external_id,
                coupon_code=coupon_code,
                applied_coupon_id=applied_coupon_id,
                amount_cents=amount_cents,
                percentage_rate=percentage_rate,
            )
        except NotFound as err:
            raise Refused(f"{err}: check the code (see examples/catalog.yaml)") from None

    def top_up_wallet(
        self, customer_external_id: str, amount_cents: int, *, transaction_id: str
    ) -> Wallet:
        """Add prepaid credits (idempotent on ``transaction_id``)."""
        try:
            return catalog_store.top_up_wallet(
                self.engine,
                customer_external_id=customer_external_id,
                amount_cents=amount_cents,
                transaction_id=transaction_id,
            )
        except NotFound as err:
            raise Refused(f"{err}: check the customer's external id") from None
        except ValueError as err:
            raise InvalidRequest(str(err)) from None

    # ------------------------------------------------------------------ webhooks

    def list_webhooks(
        self, *, status: DeliveryStatus | None = None, invoice_id: str | None = None
    ) -> list[WebhookDelivery]:
        return delivery_log.list_deliveries(self.engine, status=status, invoice_id=invoice_id)

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

    # ------------------------------------------------------------------ errors

    async def _closed_reason(self, ref: PeriodRef) -> str:
        invoice = await asyncio.to_thread(
            invoice_store.find_invoice, self.engine, ref.subscription_external_id, ref.period_start
        )
        if invoice is not None:
            return _not_editable(invoice)
        return f"billing period {ref.workflow_id} has completed: it can no longer change"

    async def _raise_translated(self, err: BaseException, ref: PeriodRef) -> NoReturn:
        """Turn Temporal's errors into :mod:`starter.errors` (always raises)."""
        if isinstance(err, BillingClientError):
            raise err
        if isinstance(err, WorkflowUpdateFailedError):
            cause: BaseException | None = err.cause
            while cause is not None and not isinstance(cause, ApplicationError):
                cause = getattr(cause, "cause", None)
            if isinstance(cause, ApplicationError):
                if cause.type == "InvoiceNotEditable":
                    raise InvoiceFinalized(cause.message) from None
                raise Refused(cause.message) from None
            raise Refused(str(err.cause or err)) from None
        if isinstance(err, RPCError):
            if err.status == RPCStatusCode.NOT_FOUND:
                invoice = await asyncio.to_thread(
                    invoice_store.find_invoice,
                    self.engine,
                    ref.subscription_external_id,
                    ref.period_start,
                )
                if invoice is not None and invoice.status in _DONE:
                    raise InvoiceFinalized(_not_editable(invoice)) from None
                if "completed" in err.message or invoice is not None:
                    raise InvoiceFinalized(await self._closed_reason(ref)) from None
                raise NoBillingPeriod(ref.workflow_id) from None
            raise Refused(f"Temporal refused the request: {err.message}") from None
        raise err


def _not_editable(invoice: Invoice) -> str:
    label = invoice.number if invoice.status == InvoiceStatus.FINALIZED else invoice.id
    return f"invoice {label} is {invoice.status.value}: it can no longer change"


def _rejection(event: UsageEvent, reason: str) -> UsageRejection:
    return UsageRejection(transaction_id=event.transaction_id, code=event.code, reason=reason)


def _describe(err: BaseException) -> str:
    if isinstance(err, RPCError):
        return f"Temporal: {err.message}"
    return str(err) or type(err).__name__
