"""What :class:`starter.client.BillingClient` returns: periods, launches, usage, snapshots."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from billing.models import Invoice, InvoiceStatus, RejectedEvent
from billing.periods import describe_period
from billing.timeline import TimelineEntry
from workflows.messages import PeriodPhase

__all__ = [
    "InvoiceSnapshot",
    "InvoiceTimeline",
    "LaunchOutcome",
    "LaunchStatus",
    "LaunchSummary",
    "PeriodDelivery",
    "PeriodRef",
    "UsageReport",
]


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
    rejected: list[RejectedEvent] = Field(default_factory=list)
    periods: list[PeriodDelivery] = Field(default_factory=list)

    @classmethod
    def merge(
        cls, deliveries: Iterable[PeriodDelivery], rejected: list[RejectedEvent]
    ) -> UsageReport:
        """One report from the answers of every batch (a period may get several)."""
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
        return cls(
            accepted=sum(d.accepted for d in merged.values()),
            duplicates=sum(d.duplicates for d in merged.values()),
            rejected=rejected,
            periods=list(merged.values()),
        )


class InvoiceSnapshot(_Model):
    """A period as the operator sees it: from the running workflow or from the store."""

    workflow_id: str
    subscription_external_id: str
    phase: PeriodPhase
    period_start: datetime
    period_end: datetime
    grace_period_ends_at: datetime | None = None
    auto_approve_at: datetime | None = None  # a held invoice approves itself then
    invoice: Invoice | None = None
    source: str  # "workflow" or "store"


class InvoiceTimeline(_Model):
    """Every recorded change of one invoice, in order (``billing invoice timeline``)."""

    invoice_id: str
    invoice_number: str
    status: InvoiceStatus
    currency: str
    subscription_external_id: str
    period_start: datetime
    period_end: datetime
    entries: list[TimelineEntry] = Field(default_factory=list)
