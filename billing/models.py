"""Catalog and ledger models of the billing domain.

These are plain pydantic v2 value objects. They are used inside Temporal workflows, so
nothing here reads a clock or a random source: every id and timestamp is given by the
caller. Money is ``Decimal`` (currency units) or ``int`` (minor units, ``*_cents``),
never float.

Catalog: :class:`BillingEntity` -> :class:`Customer` -> :class:`Subscription` -> :class:`Plan`
with its :class:`Charge` s, each pricing one :class:`BillableMetric`.
Ledger: :class:`UsageEvent` s, :class:`Invoice` with its :class:`Fee` s, operator
:class:`AdjustedFee` s, :class:`AppliedCoupon` s and the customer's :class:`Wallet`.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from billing.approval import ApprovalRules, ApprovalStatus, InvoiceApproval
from billing.decimals import PlainDecimal

__all__ = [
    "AdjustedFee",
    "AdjustmentMode",
    "AggregationType",
    "AppliedCoupon",
    "BillableMetric",
    "BillingContext",
    "BillingEntity",
    "Charge",
    "ChargeModel",
    "ChargeUsage",
    "Coupon",
    "CouponFrequency",
    "CouponType",
    "Customer",
    "DeliveryStatus",
    "Fee",
    "FeeKind",
    "FinalizeZeroAmount",
    "Invoice",
    "InvoicePreview",
    "InvoiceStatus",
    "MalformedBatch",
    "Plan",
    "PlanInterval",
    "RejectedEvent",
    "RoundingFunction",
    "Subscription",
    "UsageBatch",
    "UsageBatchesReceipt",
    "UsageEvent",
    "UsageReceipt",
    "Wallet",
    "describe_invalid",
]

MAX_USAGE_BATCH = 1000
"""Events per usage message: keeps every payload far below Temporal's 2 MB limit."""

SUBSCRIPTION_FEE_CODE = "subscription"
"""The ``code`` of the plan fee on an invoice (charge fees use their charge's code)."""


class _Value(BaseModel):
    """Base of every domain model: immutable, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class AggregationType(StrEnum):
    COUNT = "count"
    SUM = "sum"
    MAX = "max"
    UNIQUE_COUNT = "unique_count"
    LATEST = "latest"
    WEIGHTED_SUM = "weighted_sum"


class RoundingFunction(StrEnum):
    ROUND = "round"
    CEIL = "ceil"
    FLOOR = "floor"


class ChargeModel(StrEnum):
    STANDARD = "standard"
    PACKAGE = "package"
    GRADUATED = "graduated"
    VOLUME = "volume"
    PERCENTAGE = "percentage"
    GRADUATED_PERCENTAGE = "graduated_percentage"


class PlanInterval(StrEnum):
    MONTHLY = "monthly"
    YEARLY = "yearly"


class FinalizeZeroAmount(StrEnum):
    """A customer's override of the billing entity's ``finalize_zero_amount_invoice``."""

    INHERIT = "inherit"
    SKIP = "skip"
    FINALIZE = "finalize"


class CouponType(StrEnum):
    FIXED_AMOUNT = "fixed_amount"
    PERCENTAGE = "percentage"


class CouponFrequency(StrEnum):
    ONCE = "once"
    RECURRING = "recurring"
    FOREVER = "forever"


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    FINALIZED = "finalized"
    CLOSED = "closed"


class FeeKind(StrEnum):
    SUBSCRIPTION = "subscription"
    CHARGE = "charge"


class AdjustmentMode(StrEnum):
    """How an operator adjusted a fee on a draft (Lago's "adjusted fee")."""

    UNITS = "units"  # total units: recalculated through the charge model
    AMOUNT = "amount"  # total amount: replaces the computed amount
    DISPLAY_NAME = "display_name"  # only the name shown on the invoice


# --------------------------------------------------------------------------- catalog


class BillingEntity(_Value):
    code: str = Field(min_length=1, max_length=100)
    name: str = Field(min_length=1)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    timezone: str = "UTC"
    grace_period_days: int = Field(default=0, ge=0, le=365)
    tax_rate: PlainDecimal = Field(default=Decimal("0"), ge=0, le=100)  # percent
    invoice_prefix: str = Field(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9_-]+$")
    finalize_zero_amount_invoice: bool = True
    send_invoice_drafted_webhook: bool = False
    approval: ApprovalRules | None = None  # when invoices wait for an operator


class Customer(_Value):
    external_id: str = Field(min_length=1, max_length=200)
    billing_entity_code: str
    name: str = ""
    email: str | None = None
    timezone: str | None = None  # else the billing entity's
    grace_period_days: int | None = Field(default=None, ge=0, le=365)
    tax_rate: PlainDecimal | None = Field(default=None, ge=0, le=100)  # percent
    finalize_zero_amount_invoice: FinalizeZeroAmount = FinalizeZeroAmount.INHERIT
    approval: ApprovalRules | None = None  # replaces the billing entity's rules as a whole


class BillableMetric(_Value):
    code: str = Field(min_length=1, max_length=100)
    name: str = ""
    aggregation_type: AggregationType
    field_name: str | None = None  # the event property aggregated; not used by count
    rounding_function: RoundingFunction | None = None
    rounding_precision: int | None = Field(default=None, ge=-10, le=15)

    @model_validator(mode="after")
    def _field_name_required(self) -> BillableMetric:
        if self.aggregation_type != AggregationType.COUNT and not self.field_name:
            raise ValueError(f"aggregation {self.aggregation_type.value!r} needs a field_name")
        return self


class Charge(_Value):
    """A price for one billable metric within a plan.

    ``code`` identifies the charge within its plan and names its fee on the invoice; it
    defaults to the billable metric's code.
    """

    code: str = ""
    billable_metric_code: str
    charge_model: ChargeModel
    properties: dict[str, Any] = Field(default_factory=dict)
    invoice_display_name: str | None = None

    @model_validator(mode="after")
    def _default_code(self) -> Charge:
        if not self.code:
            object.__setattr__(self, "code", self.billable_metric_code)
        return self


class Plan(_Value):
    code: str = Field(min_length=1, max_length=100)
    name: str = ""
    interval: PlanInterval = PlanInterval.MONTHLY
    amount_cents: int = Field(default=0, ge=0)  # the plan (subscription) fee per period
    invoice_display_name: str | None = None
    charges: tuple[Charge, ...] = ()

    @model_validator(mode="after")
    def _unique_charge_codes(self) -> Plan:
        codes = [charge.code for charge in self.charges]
        duplicates = sorted({code for code in codes if codes.count(code) > 1})
        if duplicates:
            raise ValueError(f"charge codes must be unique within a plan: {duplicates}")
        if SUBSCRIPTION_FEE_CODE in codes:
            raise ValueError(f"{SUBSCRIPTION_FEE_CODE!r} is reserved for the plan fee")
        return self


class Subscription(_Value):
    external_id: str = Field(min_length=1, max_length=200)
    customer_external_id: str
    plan_code: str
    started_at: AwareDatetime
    terminated_at: datetime | None = None


class Coupon(_Value):
    code: str = Field(min_length=1, max_length=100)
    name: str = ""
    coupon_type: CouponType
    amount_cents: int | None = Field(default=None, ge=0)  # fixed_amount coupons
    percentage_rate: PlainDecimal | None = Field(default=None, ge=0, le=100)  # percentage coupons
    frequency: CouponFrequency = CouponFrequency.ONCE
    frequency_duration: int | None = Field(default=None, ge=1)  # periods, for recurring

    @model_validator(mode="after")
    def _shape(self) -> Coupon:
        if self.coupon_type == CouponType.FIXED_AMOUNT and self.amount_cents is None:
            raise ValueError("a fixed_amount coupon needs amount_cents")
        if self.coupon_type == CouponType.PERCENTAGE and self.percentage_rate is None:
            raise ValueError("a percentage coupon needs percentage_rate")
        if self.frequency == CouponFrequency.RECURRING and self.frequency_duration is None:
            raise ValueError("a recurring coupon needs frequency_duration")
        return self


class AppliedCoupon(_Value):
    """A coupon applied to a customer; consumed only when an invoice is finalized.

    ``amount_cents_remaining`` is what is left of a fixed ``once`` coupon (it carries over
    to later invoices until exhausted); ``frequency_duration_remaining`` counts the periods
    a recurring coupon still applies to.
    """

    id: str
    coupon_code: str
    customer_external_id: str
    coupon_type: CouponType
    amount_cents: int | None = Field(default=None, ge=0)
    percentage_rate: PlainDecimal | None = Field(default=None, ge=0, le=100)
    frequency: CouponFrequency
    frequency_duration_remaining: int | None = Field(default=None, ge=0)
    amount_cents_remaining: int | None = Field(default=None, ge=0)
    status: Literal["active", "terminated"] = "active"


class Wallet(_Value):
    """Prepaid credits of a customer, in the billing entity's currency."""

    customer_external_id: str
    balance_cents: int = Field(default=0, ge=0)


class BillingContext(_Value):
    """Everything the domain needs to bill one subscription, read in one unit of work.

    ``timezone`` and ``grace_period_days`` are resolved: the customer's, else the
    billing entity's. ``metrics`` holds the billable metrics of the plan's charges.
    """

    subscription: Subscription
    customer: Customer
    billing_entity: BillingEntity
    plan: Plan
    metrics: dict[str, BillableMetric]
    timezone: str
    grace_period_days: int
    currency: str

    @property
    def approval_rules(self) -> ApprovalRules | None:
        """The customer's approval rules, else the billing entity's (None: no holds)."""
        if self.customer.approval is not None:
            return self.customer.approval
        return self.billing_entity.approval

    @property
    def charge_codes(self) -> list[str]:
        """The plan's charge codes, in plan order."""
        return [charge.code for charge in self.plan.charges]


# --------------------------------------------------------------------------- ledger


class UsageEvent(_Value):
    """One usage event as other systems send it (Lago's event shape)."""

    transaction_id: str = Field(min_length=1, max_length=200)
    external_subscription_id: str = Field(min_length=1, max_length=200)
    code: str = Field(min_length=1, max_length=100)
    # A timezone is required; pydantic checks it natively ("Input should have timezone
    # info"), about half the cost of validating an event when done in Python.
    timestamp: AwareDatetime
    properties: dict[str, Any] = Field(default_factory=dict)

    @field_validator("properties")
    @classmethod
    def _finite_numbers(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"property {key!r} is not a finite number")
            if isinstance(item, Decimal) and not item.is_finite():
                raise ValueError(f"property {key!r} is not a finite number")
        return value


class RejectedEvent(_Value):
    """A usage event that was not billed, with the reason a sender and an operator read."""

    transaction_id: str
    code: str
    reason: str


class UsageBatch(_Value):
    """One usage message: at most ``MAX_USAGE_BATCH`` events, and who sent them."""

    requested_by: str | None = Field(default=None, min_length=1, max_length=200)
    events: list[UsageEvent] = Field(min_length=1, max_length=MAX_USAGE_BATCH)


class UsageReceipt(_Value):
    """What recording one batch of usage did: new events, copies of known ones, refusals."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[RejectedEvent] = Field(default_factory=list)


class MalformedBatch(_Value):
    """A usage message refused whole: ``position`` among those recorded together."""

    position: int
    reason: str


class UsageBatchesReceipt(UsageReceipt):
    """What recording several usage messages together did; malformed ones are refused.

    ``rejected`` lists the first refused events only (the receipt is a step's result in
    the workflow's history, which bounds its size); ``rejected_not_listed`` counts the
    rest. Every refused event is kept with its reason in the store either way.
    """

    malformed: list[MalformedBatch] = Field(default_factory=list)
    rejected_not_listed: int = 0


def describe_invalid(err: ValidationError) -> str:
    """A validation error in one line a sender can act on (its first five problems)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in err.errors()[:5]
    )


class ChargeUsage(_Value):
    """A charge's usage over one period, as the store aggregates it.

    ``units`` is the metric's aggregate (before the metric's rounding). ``event_values``
    are the per-event values in timestamp order; only the percentage models need them.
    """

    units: PlainDecimal = Decimal("0")
    events_count: int = 0
    event_values: tuple[PlainDecimal, ...] = ()


class AdjustedFee(_Value):
    """An operator's edit of one fee on a draft, stored apart from the computed fee.

    - ``units`` mode: ``units`` is the total units, priced through the charge model;
    - ``amount`` mode: ``units`` x ``unit_amount`` (or a plain total: ``units`` = 1)
      replaces the computed amount;
    - ``display_name`` mode: only the name changes.
    ``display_name`` may be given in every mode.
    """

    charge_code: str
    mode: AdjustmentMode
    units: PlainDecimal | None = Field(default=None, ge=0)
    unit_amount: PlainDecimal | None = Field(default=None, ge=0)  # currency units
    display_name: str | None = Field(default=None, min_length=1, max_length=255)

    @model_validator(mode="after")
    def _shape(self) -> AdjustedFee:
        if self.mode == AdjustmentMode.UNITS and self.units is None:
            raise ValueError("a total-units adjustment needs units")
        if self.mode == AdjustmentMode.AMOUNT and (self.units is None or self.unit_amount is None):
            raise ValueError("a total-amount adjustment needs units and unit_amount")
        if self.mode == AdjustmentMode.DISPLAY_NAME and not self.display_name:
            raise ValueError("a display-name adjustment needs display_name")
        return self


class Fee(_Value):
    code: str  # charge code, or "subscription" for the plan fee
    kind: FeeKind
    display_name: str
    units: PlainDecimal
    amount_cents: int = Field(ge=0)
    precise_amount: PlainDecimal  # unrounded, currency units
    unit_amount: PlainDecimal = Decimal("0")  # currency units (amount / units when units > 0)
    events_count: int = 0
    adjusted: bool = False
    # Shares filled at finalization (0 on a draft).
    coupons_amount_cents: int = 0
    taxes_amount_cents: int = 0
    precise_taxes_amount: PlainDecimal = Decimal("0")


DeliveryStatus = Literal["pending", "retrying", "succeeded", "failed"]
"""Where a webhook delivery stands: every attempt is logged, a failed one can be retried."""


class Invoice(_Value):
    """The invoice JSON (docs/architecture.md, "Invoice JSON"), and the workflow's view."""

    id: str
    number: str
    status: InvoiceStatus
    currency: str
    customer_external_id: str
    subscription_external_id: str
    billing_entity_code: str = ""
    period_start: datetime
    period_end: datetime
    issuing_date: datetime | None = None
    fees: tuple[Fee, ...] = ()
    fees_amount_cents: int = 0
    coupons_amount_cents: int = 0
    taxes_amount_cents: int = 0
    sub_total_excluding_taxes_amount_cents: int = 0
    sub_total_including_taxes_amount_cents: int = 0
    prepaid_credit_amount_cents: int = 0
    total_amount_cents: int = 0
    tax_rate: PlainDecimal = Decimal("0")
    # When the grace period ends (null once finalized or closed, and before a draft).
    expected_finalization_at: datetime | None = None
    # Where the invoice stands with its approval rules (null: not checked yet).
    approval: InvoiceApproval | None = None

    @property
    def awaiting_approval(self) -> bool:
        """Held by an approval rule: it stays a draft until someone approves it."""
        return self.approval is not None and self.approval.status == ApprovalStatus.REQUIRED


class InvoicePreview(Invoice):
    """The invoice as finalization would make it now: ``preview`` true, no number yet,
    ``status`` what finalization would give (``finalized`` or ``closed``)."""

    number: str | None = None  # type: ignore[assignment]
    preview: Literal[True] = True
