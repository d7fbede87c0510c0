"""Invoice activities: each method calls one operation of :mod:`services`.

Temporal may run an activity more than once, so every operation is idempotent on its
business key (subscription + period for the invoice, transaction id for events, delivery
id for webhooks). Domain errors are permanent: they become non-retryable
``ApplicationError`` s whose type is the error's class name, so the workflow can tell the
caller what was wrong. Anything else (a dropped connection, a lock timeout) is retried.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import ParamSpec, TypeVar

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from billing.errors import BillingError
from billing.models import AdjustedFee, Invoice, UsageEvent, UsageReceipt
from services import finalization, invoices, periods, rejections, usage
from services.invoices import DraftOutcome
from services.periods import PeriodSettings

__all__ = [
    "CreateDraftRequest",
    "DraftOutcome",
    "DraftRequest",
    "FeeAdjustmentRequest",
    "FinalizeRequest",
    "FinalizeResult",
    "InvoiceActivities",
    "InvoiceRef",
    "PeriodSettings",
    "PeriodSettingsRequest",
    "RecordRejectionRequest",
    "RecordUsageRequest",
    "RemoveFeeAdjustmentRequest",
]

P = ParamSpec("P")
R = TypeVar("R")


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True)


class PeriodSettingsRequest(_Request):
    subscription_external_id: str
    period_start: datetime
    period_end: datetime


class RecordUsageRequest(_Request):
    subscription_external_id: str
    period_start: datetime
    period_end: datetime
    events: list[UsageEvent]


class CreateDraftRequest(_Request):
    subscription_external_id: str
    period_start: datetime
    period_end: datetime


class DraftRequest(_Request):
    subscription_external_id: str
    period_start: datetime
    period_end: datetime


class InvoiceRef(_Request):
    invoice_id: str


class FeeAdjustmentRequest(_Request):
    invoice_id: str
    adjustment: AdjustedFee


class RemoveFeeAdjustmentRequest(_Request):
    invoice_id: str
    charge_code: str


class FinalizeRequest(_Request):
    invoice_id: str
    issued_at: datetime


class FinalizeResult(_Request):
    invoice: Invoice
    delivery_ids: list[str]


class RecordRejectionRequest(_Request):
    key: str  # idempotency key: workflow run + sequence number of the input
    source: str  # the workflow id
    kind: str
    payload: str
    reason: str
    subscription_external_id: str | None = None


def _permanent_domain_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn domain errors into non-retryable application errors named after their class."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except BillingError as err:
            raise ApplicationError(str(err), type=type(err).__name__, non_retryable=True) from err

    return wrapper


class InvoiceActivities:
    """Activities over one database; built once in the worker with its engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @activity.defn
    @_permanent_domain_errors
    def load_period_settings(self, request: PeriodSettingsRequest) -> PeriodSettings:
        return periods.load_period_settings(
            self._engine, request.subscription_external_id, request.period_start, request.period_end
        )

    @activity.defn
    @_permanent_domain_errors
    def record_usage(self, request: RecordUsageRequest) -> UsageReceipt:
        return usage.record_usage(
            self._engine,
            request.subscription_external_id,
            request.period_start,
            request.period_end,
            request.events,
        )

    @activity.defn
    @_permanent_domain_errors
    def create_draft(self, request: CreateDraftRequest) -> Invoice:
        return invoices.create_draft(
            self._engine,
            request.subscription_external_id,
            request.period_start,
            request.period_end,
        )

    @activity.defn
    @_permanent_domain_errors
    def draft_invoice(self, request: DraftRequest) -> DraftOutcome:
        """Period end in one step: the settings, the draft, the ``invoice.drafted`` rows."""
        return invoices.draft_invoice(
            self._engine,
            request.subscription_external_id,
            request.period_start,
            request.period_end,
        )

    @activity.defn
    @_permanent_domain_errors
    def queue_drafted_webhook(self, request: InvoiceRef) -> list[str]:
        return invoices.queue_drafted_webhook(self._engine, request.invoice_id)

    @activity.defn
    @_permanent_domain_errors
    def refresh_draft(self, request: InvoiceRef) -> Invoice:
        return invoices.refresh_draft(self._engine, request.invoice_id)

    @activity.defn
    @_permanent_domain_errors
    def adjust_fee(self, request: FeeAdjustmentRequest) -> Invoice:
        return invoices.adjust_fee(self._engine, request.invoice_id, request.adjustment)

    @activity.defn(name="remove_adjustment")
    @_permanent_domain_errors
    def remove_fee_adjustment(self, request: RemoveFeeAdjustmentRequest) -> Invoice:
        return invoices.remove_fee_adjustment(self._engine, request.invoice_id, request.charge_code)

    @activity.defn
    @_permanent_domain_errors
    def finalize_invoice(self, request: FinalizeRequest) -> FinalizeResult:
        outcome = finalization.finalize_invoice(self._engine, request.invoice_id, request.issued_at)
        return FinalizeResult(invoice=outcome.invoice, delivery_ids=list(outcome.delivery_ids))

    @activity.defn
    @_permanent_domain_errors
    def record_rejection(self, request: RecordRejectionRequest) -> None:
        rejections.record_rejected_input(
            self._engine,
            key=request.key,
            source=request.source,
            kind=request.kind,
            payload=request.payload,
            reason=request.reason,
            subscription_external_id=request.subscription_external_id,
        )
