"""The invoice timeline: every change of an invoice, in order, with who asked for it.

An entry is written by the store in the same transaction as the change it records, under
an idempotency key (the activity attempt's business key), so a retried step never
records a change twice and a committed change is never missing from it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

__all__ = ["SYSTEM_ACTOR", "TimelineEntry", "TimelineKind"]

SYSTEM_ACTOR = "system"
"""The actor of what the period does by itself: drafting, the grace timer, refreshes."""


class TimelineKind(StrEnum):
    DRAFT_CREATED = "draft_created"
    USAGE_RECORDED = "usage_recorded"
    REFRESHED = "refreshed"
    FEE_ADJUSTED = "fee_adjusted"
    FEE_ADJUSTMENT_REMOVED = "fee_adjustment_removed"
    APPROVAL_REQUIRED = "approval_required"
    APPROVED = "approved"
    GRACE_PERIOD_CHANGED = "grace_period_changed"
    FINALIZED = "finalized"
    CLOSED = "closed"
    WEBHOOK_DELIVERED = "webhook_delivered"
    WEBHOOK_FAILED = "webhook_failed"
    INPUT_REJECTED = "input_rejected"


class TimelineEntry(BaseModel):
    """One change: when, what, who, a line for people, and the invoice total after it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime
    kind: TimelineKind
    actor: str
    summary: str
    total_amount_cents: int
