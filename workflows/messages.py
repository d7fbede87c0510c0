"""Payloads of the billing-period workflow: its input, signals, updates and queries.

These are the contract other systems rely on: each is a pydantic model whose JSON schema
is published in the README (``billing schema``), so a system in another language can send
them with its own Temporal SDK. Every field added later gets a default.

Every mutation exists twice, with the same payload:

========================  ===========================  =====================================
signal (fire and forget)  update (waits for a result)  what it does
========================  ===========================  =====================================
``add_usage``             ``add_usage_sync``           record a batch of usage events
``edit_fee``              ``edit_fee_sync``            adjust a fee on the draft
``remove_fee_adjustment`` ``remove_fee_adjustment_sync`` restore a computed fee
``refresh_invoice``       ``refresh_invoice_sync``     recompute the draft
``finalize_invoice``      ``finalize_invoice_sync``    end the grace period now
``approve_invoice``       ``approve_invoice_sync``     finalize a held invoice (approval)
``recompute_grace_period``                             follow a changed grace period setting
========================  ===========================  =====================================

Every mutation takes an optional ``requested_by``: who asked (a person or a system's
name), written to the invoice timeline.

Queries: ``invoice`` (:class:`PeriodView`), ``preview`` (the invoice finalization would
make) and ``rejections`` (list of :class:`RejectedInput`).
An ``add_usage_sync`` update returns a :class:`billing.models.UsageReceipt`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from billing.decimals import PlainDecimal
from billing.models import (
    MAX_USAGE_BATCH,
    AdjustedFee,
    AdjustmentMode,
    Invoice,
    UsageBatch,
    UsageReceipt,
)

__all__ = [
    "MAX_USAGE_BATCH",
    "AddUsage",
    "ApproveInvoice",
    "BillingPeriodInput",
    "EditFee",
    "FinalizeInvoice",
    "PeriodPhase",
    "PeriodView",
    "RecomputeGracePeriod",
    "RefreshInvoice",
    "RejectedInput",
    "RemoveFeeAdjustment",
    "UsageReceipt",
]


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Mutation(_Message):
    """A change someone asks for; ``requested_by`` names them in the invoice timeline."""

    requested_by: str | None = Field(default=None, min_length=1, max_length=200)


class PeriodPhase(StrEnum):  # what each phase accepts: workflows.phases
    OPEN = "open"  # before period end: usage accepted, no invoice yet
    DRAFT = "draft"  # grace period: usage, edits, refresh, finalize-now
    AWAITING_APPROVAL = "awaiting_approval"  # held by an approval rule; the invoice is a draft
    FINALIZING = "finalizing"
    FINALIZED = "finalized"
    CLOSED = "closed"  # empty invoice skipped: no number, no webhook


class BillingPeriodInput(_Message):
    """Start of one billing period of one subscription.

    ``grace_period_seconds`` overrides the customer's grace period (days) for this run:
    for tests and demos. ``webhook_retry_window_seconds`` bounds webhook retries.
    ``customer_external_id`` is what the open phase shows before the draft reads the
    customer's settings (the starter knows it; empty from an older starter).
    """

    subscription_external_id: str = Field(min_length=1)
    customer_external_id: str = ""
    period_start: datetime
    period_end: datetime
    grace_period_seconds: int | None = Field(default=None, ge=0)
    refresh_debounce_seconds: int = Field(default=5, ge=0, le=3600)
    webhook_retry_window_seconds: int = Field(default=6 * 3600, ge=0)
    max_signals_per_run: int = Field(default=5000, ge=1, le=9000)  # history bound per run
    carried_state: dict[str, Any] | None = None  # set by the workflow when it continues as new

    @model_validator(mode="after")
    def _period_order(self) -> BillingPeriodInput:
        if self.period_end <= self.period_start:
            raise ValueError("period_end must be after period_start")
        return self


class AddUsage(UsageBatch):
    """A batch of usage events for this period (at most ``MAX_USAGE_BATCH``).

    The domain's :class:`billing.models.UsageBatch`: the store step that records a usage
    signal validates its JSON against the same model.
    """


class EditFee(_Mutation):
    """An operator's fee edit on the draft (Lago's adjusted fee).

    ``mode=units``: ``units`` is the total units, priced through the charge model.
    ``mode=amount``: ``units`` x ``unit_amount`` replaces the fee's amount (a plain total:
    ``units=1``, ``unit_amount`` = the total). ``mode=display_name``: only the name.
    Editing a charge that produced no fee (0 units) adds a fee for it.
    """

    charge_code: str = Field(min_length=1)
    mode: AdjustmentMode
    units: PlainDecimal | None = Field(default=None, ge=0, allow_inf_nan=False, max_digits=30)
    unit_amount: PlainDecimal | None = Field(default=None, ge=0, allow_inf_nan=False, max_digits=30)
    display_name: str | None = Field(default=None, min_length=1, max_length=255)

    @model_validator(mode="after")
    def _shape(self) -> EditFee:
        try:
            self.to_adjustment()  # the domain's rules for each mode, in one place
        except ValidationError as err:
            raise ValueError(
                "; ".join(str(e.get("ctx", {}).get("error", e["msg"])) for e in err.errors())
            ) from None
        return self

    def to_adjustment(self) -> AdjustedFee:
        return AdjustedFee(
            charge_code=self.charge_code,
            mode=self.mode,
            units=self.units,
            unit_amount=self.unit_amount,
            display_name=self.display_name,
        )


class RemoveFeeAdjustment(_Mutation):
    charge_code: str = Field(min_length=1)


class RefreshInvoice(_Mutation):
    reason: str = ""


class FinalizeInvoice(_Mutation):
    reason: str = ""


class ApproveInvoice(_Mutation):
    """Finalize a held invoice now; an invoice that needs no approval is finalized too."""

    note: str | None = Field(default=None, min_length=1, max_length=2000)


class RecomputeGracePeriod(_Mutation):
    """The grace period setting changed: a running draft moves its deadline to
    (moment drafted + the new grace period). Sent by ``billing catalog load``."""


# ``UsageReceipt`` (imported above) is the domain's receipt, listed by ``billing schema``.


class RejectedInput(_Message):
    """An input the workflow refused, kept for operators (also stored in the database)."""

    kind: str  # signal or update name
    reason: str
    received_at: datetime
    payload_excerpt: str = ""


class PeriodView(_Message):
    """What the ``invoice`` query returns: phase, deadlines and the current invoice."""

    subscription_external_id: str
    customer_external_id: str = ""
    period_start: datetime
    period_end: datetime
    phase: PeriodPhase
    grace_period_ends_at: datetime | None = None
    auto_approve_at: datetime | None = None  # a held invoice approves itself then
    invoice: Invoice | None = None
    events_accepted: int = 0
    events_duplicated: int = 0
    inputs_rejected: int = 0
    webhooks_delivered: int = 0
    webhooks_failed: int = 0
