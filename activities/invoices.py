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
from typing import Any, ParamSpec, TypeVar

from pydantic import BaseModel, ConfigDict, model_validator
from sqlalchemy import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from billing.decimals import PlainDecimal
from billing.errors import BillingError
from billing.models import (
    AdjustedFee,
    Invoice,
    InvoicePreview,
    UsageBatchesReceipt,
    UsageEvent,
    UsageReceipt,
)
from billing.timeline import SYSTEM_ACTOR
from services import finalization, grace_periods, invoices, periods, rejections, usage
from services.finalization import Approval, FinalizationOutcome
from services.invoices import DraftOutcome
from services.periods import PeriodSettings

__all__ = [
    "CreateDraftRequest",
    "DraftChange",
    "DraftOutcome",
    "DraftRequest",
    "FeeAdjustmentRequest",
    "FinalizationOutcome",
    "FinalizeRequest",
    "FinalizeResult",
    "InvoiceActivities",
    "InvoiceRef",
    "PeriodSettings",
    "PeriodSettingsRequest",
    "RecomputeGracePeriodRequest",
    "RecordRejectionRequest",
    "RecordUsageBatchesRequest",
    "RecordUsageRequest",
    "RefreshRequest",
    "RemoveFeeAdjustmentRequest",
]

P = ParamSpec("P")
R = TypeVar("R")


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True)


# Fields added to a payload get defaults: payloads recorded in older workflow histories
# (replayed, or retried by a newer worker) must still decode.


class PeriodSettingsRequest(_Request):
    subscription_external_id: str
    period_start: datetime
    period_end: datetime


class RecordUsageRequest(_Request):
    subscription_external_id: str
    period_start: datetime
    period_end: datetime
    events: list[UsageEvent]
    invoice_id: str | None = None  # the draft, for usage arriving in its grace period
    requested_by: str | None = None


class RecordUsageBatchesRequest(_Request):
    """Usage signals as they arrived: the JSON text of one ``AddUsage`` message each."""

    subscription_external_id: str
    period_start: datetime
    period_end: datetime
    batches: list[str]
    invoice_id: str | None = None


class CreateDraftRequest(_Request):
    subscription_external_id: str
    period_start: datetime
    period_end: datetime
    drafted_at: datetime | None = None  # the workflow's clock; default the activity's
    grace_period_seconds: int | None = None  # fixed by the period; default its settings'


class DraftRequest(_Request):
    subscription_external_id: str
    period_start: datetime
    period_end: datetime
    drafted_at: datetime | None = None
    grace_period_seconds: int | None = None
    # Patch "draft-finalizes-when-due": finalize in the same step when the grace period
    # is already over (zero); runs before it send nothing and finalize in a step of its own.
    finalize_when_due: bool = False


class InvoiceRef(_Request):
    invoice_id: str


class RefreshRequest(InvoiceRef):
    requested_by: str | None = None


class FeeAdjustmentRequest(_Request):
    invoice_id: str
    adjustment: AdjustedFee
    requested_by: str | None = None


class RemoveFeeAdjustmentRequest(_Request):
    invoice_id: str
    charge_code: str
    requested_by: str | None = None


class FinalizeRequest(_Request):
    invoice_id: str
    issued_at: datetime
    requested_by: str | None = None
    approved_by: str | None = None  # set: an approval, finalize whatever the rules say
    approval_note: str | None = None


class FinalizeResult(_Request):
    invoice: Invoice
    delivery_ids: list[str]
    held: bool = False  # an approval rule holds the draft: wait for an approval
    auto_approve_after_hours: PlainDecimal | None = None


class RecomputeGracePeriodRequest(_Request):
    invoice_id: str
    requested_by: str | None = None


class DraftChange(_Request):
    """The draft after an edit and the preview of finalizing it now (one transaction).

    These activities returned the bare invoice before: a result recorded then (an
    ``Invoice`` JSON object) still decodes, as a change without a preview.
    """

    invoice: Invoice
    preview: InvoicePreview | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_invoice(cls, data: Any) -> Any:
        if isinstance(data, dict) and "invoice" not in data:
            return {"invoice": data}
        return data


class RecordRejectionRequest(_Request):
    key: str  # idempotency key: workflow run + sequence number of the input
    source: str  # the workflow id
    kind: str
    payload: str
    reason: str
    subscription_external_id: str | None = None
    invoice_id: str | None = None  # the period's invoice: its timeline shows the refusal
    requested_by: str | None = None


def _change_key() -> str:
    """The timeline key of the change this activity makes: the same for every retry of
    this activity, different for every other step of every run."""
    info = activity.info()
    return f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}"


def _draft_change(change: invoices.DraftChange) -> DraftChange:
    return DraftChange(invoice=change.invoice, preview=change.preview)


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
            invoice_id=request.invoice_id,
            key=_change_key(),
            actor=request.requested_by or SYSTEM_ACTOR,
        )

    @activity.defn
    @_permanent_domain_errors
    def record_usage_batches(self, request: RecordUsageBatchesRequest) -> UsageBatchesReceipt:
        """Validate and record usage signals together; a malformed one is refused whole."""
        return usage.record_usage_batches(
            self._engine,
            request.subscription_external_id,
            request.period_start,
            request.period_end,
            request.batches,
            invoice_id=request.invoice_id,
            key=_change_key(),
        )

    @activity.defn
    @_permanent_domain_errors
    def create_draft(self, request: CreateDraftRequest) -> Invoice:
        return invoices.create_draft(
            self._engine,
            request.subscription_external_id,
            request.period_start,
            request.period_end,
            drafted_at=request.drafted_at,
            grace_period_seconds=request.grace_period_seconds,
        )

    @activity.defn
    @_permanent_domain_errors
    def draft_invoice(self, request: DraftRequest) -> DraftOutcome:
        """Period end in one step: the settings, the draft, the ``invoice.drafted`` rows
        (and the finalization, when asked for and the grace period is already over)."""
        return invoices.draft_invoice(
            self._engine,
            request.subscription_external_id,
            request.period_start,
            request.period_end,
            drafted_at=request.drafted_at,
            grace_period_seconds=request.grace_period_seconds,
            finalize_when_due=request.finalize_when_due,
        )

    @activity.defn
    @_permanent_domain_errors
    def queue_drafted_webhook(self, request: InvoiceRef) -> list[str]:
        return invoices.queue_drafted_webhook(self._engine, request.invoice_id)

    @activity.defn
    @_permanent_domain_errors
    def refresh_draft(self, request: RefreshRequest) -> DraftChange:
        change = invoices.refresh_draft(
            self._engine,
            request.invoice_id,
            key=_change_key(),
            actor=request.requested_by or SYSTEM_ACTOR,
            preview=True,
        )
        return _draft_change(change)

    @activity.defn
    @_permanent_domain_errors
    def adjust_fee(self, request: FeeAdjustmentRequest) -> DraftChange:
        change = invoices.adjust_fee(
            self._engine,
            request.invoice_id,
            request.adjustment,
            key=_change_key(),
            actor=request.requested_by or SYSTEM_ACTOR,
            preview=True,
        )
        return _draft_change(change)

    @activity.defn(name="remove_adjustment")
    @_permanent_domain_errors
    def remove_fee_adjustment(self, request: RemoveFeeAdjustmentRequest) -> DraftChange:
        change = invoices.remove_fee_adjustment(
            self._engine,
            request.invoice_id,
            request.charge_code,
            key=_change_key(),
            actor=request.requested_by or SYSTEM_ACTOR,
            preview=True,
        )
        return _draft_change(change)

    @activity.defn
    @_permanent_domain_errors
    def finalize_invoice(self, request: FinalizeRequest) -> FinalizeResult:
        """Finalize, close or hold the draft; ``approved_by`` approves it (held or not)."""
        if request.approved_by is not None:
            outcome = finalization.finalize_invoice(
                self._engine,
                request.invoice_id,
                request.issued_at,
                approval=Approval(approved_by=request.approved_by, note=request.approval_note),
                actor=request.approved_by,
            )
        else:
            outcome = finalization.finalize_invoice(
                self._engine,
                request.invoice_id,
                request.issued_at,
                actor=request.requested_by or SYSTEM_ACTOR,
            )
        return FinalizeResult(
            invoice=outcome.invoice,
            delivery_ids=list(outcome.delivery_ids),
            held=outcome.held,
            auto_approve_after_hours=outcome.auto_approve_after_hours,
        )

    @activity.defn
    @_permanent_domain_errors
    def recompute_grace_period(self, request: RecomputeGracePeriodRequest) -> Invoice:
        """Move a draft's grace period end to what its settings give now (see
        :func:`services.grace_periods.recompute_grace_period`)."""
        return grace_periods.recompute_grace_period(
            self._engine,
            request.invoice_id,
            key=_change_key(),
            actor=request.requested_by or SYSTEM_ACTOR,
        )

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
            invoice_id=request.invoice_id,
            actor=request.requested_by or SYSTEM_ACTOR,
        )
