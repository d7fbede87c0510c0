"""The read side of :class:`starter.client.BillingClient`: which period a request means,
and what an operator reads about its invoice (show, preview, timeline).

``show_invoice`` reads the workflow while it runs (query ``invoice``), else the store.
The preview is computed from the stored draft as finalization would (see
``preview_invoice`` for why not from the ``preview`` query). The timeline is read from
the store only: it is written there with each change, so it outlives the workflow and
Temporal's history retention.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, NoReturn

import sqlalchemy
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from billing.errors import InvoiceNotEditable, NotFound
from billing.models import BillingContext, Invoice, InvoicePreview, InvoiceStatus
from billing.periods import billing_period, period_starting
from services import finalization
from services import timeline as timeline_service
from starter.errors import InvalidRequest, InvoiceFinalized, NoBillingPeriod, Refused
from starter.periods import period_workflow_id
from starter.results import InvoiceSnapshot, InvoiceTimeline, PeriodRef
from starter.store_access import StoreAccess
from starter.translate import DONE, raise_translated
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import BillingPeriodInput, PeriodPhase, PeriodView

__all__ = ["PeriodAccess"]


class PeriodAccess(StoreAccess):
    """Periods and the reads of their invoices; :class:`starter.client.BillingClient`
    adds the changes."""

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

    # ------------------------------------------------------------------ reads

    async def _running_handle(self, ref: PeriodRef) -> WorkflowHandle[Any, Any] | None:
        """The period's workflow handle while it runs, else None."""
        handle = self.client.get_workflow_handle_for(BillingPeriodWorkflow.run, ref.workflow_id)
        try:
            description = await handle.describe()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise Refused(f"cannot reach Temporal: {err.message}") from None
            return None
        return handle if description.status == WorkflowExecutionStatus.RUNNING else None

    async def show_invoice(
        self, subscription_external_id: str, period_start: date | None = None
    ) -> InvoiceSnapshot:
        """The running workflow's view, else the stored invoice."""
        ref = self.period(subscription_external_id, period_start)
        handle = await self._running_handle(ref)
        if handle is not None:
            view: PeriodView = await handle.query(BillingPeriodWorkflow.invoice)
            return InvoiceSnapshot(
                workflow_id=ref.workflow_id,
                subscription_external_id=subscription_external_id,
                phase=view.phase,
                period_start=view.period_start,
                period_end=view.period_end,
                grace_period_ends_at=view.grace_period_ends_at,
                auto_approve_at=view.auto_approve_at,
                invoice=view.invoice,
                source="workflow",
            )
        invoice = await self.find_invoice(ref.subscription_external_id, ref.period_start)
        if invoice is None:
            raise NoBillingPeriod(ref.workflow_id)
        return InvoiceSnapshot(
            workflow_id=ref.workflow_id,
            subscription_external_id=subscription_external_id,
            phase=_stored_phase(invoice),
            period_start=invoice.period_start,
            period_end=invoice.period_end,
            invoice=invoice,
            source="store",
        )

    async def preview_invoice(
        self, subscription_external_id: str, period_start: date | None = None
    ) -> InvoicePreview:
        """The invoice as finalization would make it now (``preview`` true, no number).

        Computed from the stored draft by the code finalization runs
        (``services.finalization.preview_invoice``), writing nothing. Not the workflow's
        ``preview`` query: that one is as of the draft's last change, so it misses a
        coupon or credits added since (``billing coupon apply`` and ``wallet top-up``
        only touch the store). A finalized or closed invoice has nothing to preview:
        :class:`InvoiceFinalized` (``show_invoice`` returns it); a period with no draft
        yet: :class:`Refused`, or :class:`NoBillingPeriod` when it was never started.
        """
        ref = self.period(subscription_external_id, period_start)
        invoice = await self.find_invoice(ref.subscription_external_id, ref.period_start)
        if invoice is None:
            if await self._running_handle(ref) is None:
                raise NoBillingPeriod(ref.workflow_id)
            raise Refused(
                f"billing period {ref.workflow_id} is open until {ref.period_end.isoformat()}: "
                "there is no draft invoice to preview yet"
            )
        if invoice.status in DONE:
            raise InvoiceFinalized(_nothing_left(invoice, "preview"))
        try:
            return await asyncio.to_thread(finalization.preview_invoice, self.engine, invoice.id)
        except InvoiceNotEditable:  # finalized between the two reads
            raise InvoiceFinalized(_nothing_left(invoice, "preview")) from None

    async def invoice_timeline(
        self, subscription_external_id: str, period_start: date | None = None
    ) -> InvoiceTimeline:
        """Every recorded change of the period's invoice, in order, from the store.

        Needs no Temporal connection, and works long after the workflow is gone.
        """
        ref = self.period(subscription_external_id, period_start)
        invoice = await self.find_invoice(ref.subscription_external_id, ref.period_start)
        if invoice is None:
            if ref.period_end > self._now():
                raise Refused(
                    f"billing period {ref.workflow_id} is open until "
                    f"{ref.period_end.isoformat()}: its invoice (and timeline) starts with "
                    "the draft at period end"
                )
            raise NoBillingPeriod(ref.workflow_id)
        try:
            entries = await asyncio.to_thread(
                timeline_service.invoice_timeline, self.engine, invoice.id
            )
        except NotFound as err:  # pragma: no cover - the invoice was just found
            raise Refused(str(err)) from None
        return InvoiceTimeline(
            invoice_id=invoice.id,
            invoice_number=invoice.number,
            status=invoice.status,
            currency=invoice.currency,
            subscription_external_id=invoice.subscription_external_id,
            period_start=invoice.period_start,
            period_end=invoice.period_end,
            entries=entries,
        )

    # ------------------------------------------------------------------ helpers

    async def _raise_translated(self, err: BaseException, ref: PeriodRef) -> NoReturn:
        await raise_translated(
            err,
            ref.workflow_id,
            lambda: self.find_invoice(ref.subscription_external_id, ref.period_start),
        )


def _stored_phase(invoice: Invoice) -> PeriodPhase:
    if invoice.status == InvoiceStatus.DRAFT and invoice.awaiting_approval:
        return PeriodPhase.AWAITING_APPROVAL
    return PeriodPhase(invoice.status.value)


def _nothing_left(invoice: Invoice, action: str) -> str:
    label = invoice.number if invoice.status == InvoiceStatus.FINALIZED else invoice.id
    return (
        f"invoice {label} is {invoice.status.value}: there is nothing to {action}; "
        "`billing invoice show` prints it"
    )
