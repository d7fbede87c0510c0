"""Approval holds: when a would-be invoice waits for an operator before it is finalized.

A billing entity may carry :class:`ApprovalRules`; a customer's own rules replace the
entity's as a whole. When the grace period ends (or someone asks to finalize) the
invoice that finalization would make is checked against them (:func:`approval_reasons`):
any reason holds the invoice as a draft until someone approves it, or until
``auto_approve_after_hours`` have passed. An invoice that finalization would close
(empty, and the settings say skip) is never held: nothing is charged.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from billing.decimals import PlainDecimal

__all__ = [
    "ApprovalRules",
    "ApprovalStatus",
    "InvoiceApproval",
    "approval_reasons",
]


class ApprovalRules(BaseModel):
    """When an invoice needs an operator's approval; every rule is optional.

    - ``total_above_cents``: the total (after coupons, taxes and credits) is above it;
    - ``change_above_percent``: the total differs from the subscription's previous
      finalized invoice by more than this percentage (no previous invoice: no match);
    - ``always``: every invoice that would be finalized;
    - ``auto_approve_after_hours``: a held invoice finalizes by itself after this long.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    total_above_cents: int | None = Field(default=None, ge=0)
    change_above_percent: PlainDecimal | None = Field(
        default=None, ge=0, allow_inf_nan=False, max_digits=20
    )
    always: bool = False
    auto_approve_after_hours: PlainDecimal | None = Field(
        default=None, gt=0, le=24 * 366, allow_inf_nan=False, max_digits=20
    )


class ApprovalStatus(StrEnum):
    REQUIRED = "required"  # held: waits for an approval
    APPROVED = "approved"  # was held (or would have been) and someone approved it
    NOT_REQUIRED = "not_required"  # finalized (or closed) without a hold


class InvoiceApproval(BaseModel):
    """The ``approval`` of the invoice JSON: where the invoice stands with its rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: ApprovalStatus
    reasons: tuple[str, ...] = ()
    approved_by: str | None = None
    approved_at: datetime | None = None
    note: str | None = None


def approval_reasons(
    rules: ApprovalRules | None,
    total_amount_cents: int,
    previous_total_cents: int | None,
) -> list[str]:
    """Why an invoice of ``total_amount_cents`` needs approval; empty when it does not.

    ``previous_total_cents`` is the subscription's previous finalized invoice's total
    (None: there is none). A change from 0 to anything else is a change of 100%.

    >>> approval_reasons(ApprovalRules(total_above_cents=10_000), 12_000, None)
    ['total 12000 cents is above 10000 cents']
    >>> approval_reasons(ApprovalRules(change_above_percent=Decimal("50")), 16_000, 10_000)
    ['total changed by 60% from the previous invoice (10000 cents)']
    >>> approval_reasons(ApprovalRules(change_above_percent=Decimal("50")), 16_000, None)
    []
    """
    if rules is None:
        return []
    reasons: list[str] = []
    if rules.always:
        reasons.append("every invoice needs approval")
    if rules.total_above_cents is not None and total_amount_cents > rules.total_above_cents:
        reasons.append(f"total {total_amount_cents} cents is above {rules.total_above_cents} cents")
    if rules.change_above_percent is not None and previous_total_cents is not None:
        change = _change_percent(total_amount_cents, previous_total_cents)
        if change > rules.change_above_percent:
            reasons.append(
                f"total changed by {_percent_text(change)}% from the previous invoice "
                f"({previous_total_cents} cents)"
            )
    return reasons


def _change_percent(total: int, previous: int) -> Decimal:
    if previous == 0:
        return Decimal(0) if total == 0 else Decimal(100)
    return abs(Decimal(total - previous)) * 100 / abs(Decimal(previous))


def _percent_text(value: Decimal) -> str:
    rounded = value.quantize(Decimal("0.01"))
    text = format(rounded.normalize(), "f")
    return text
