"""Grace periods that follow their settings: a running draft's deadline is the moment it
was drafted plus the grace period its customer's settings give now, unless the period
fixed its own grace period. A catalog change moves the deadlines of running drafts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import Engine

from billing.models import Invoice, InvoiceStatus
from billing.periods import period_workflow_id
from billing.timeline import SYSTEM_ACTOR, TimelineKind
from services.timeline import new_key, record_change
from store.unit_of_work import UnitOfWork

__all__ = ["DraftToFollow", "drafts_to_follow_settings", "recompute_grace_period"]

DAY = timedelta(days=1)


class DraftToFollow(NamedTuple):
    """A running draft whose grace period no longer matches its settings."""

    invoice_id: str
    subscription_external_id: str
    period_start: datetime
    expected_finalization_at: datetime | None
    follows_at: datetime  # drafted_at + the grace period the settings now give
    workflow_id: str  # the period's workflow (billing.periods.period_workflow_id)


def recompute_grace_period(
    engine: Engine,
    invoice_id: str,
    *,
    key: str | None = None,
    actor: str = SYSTEM_ACTOR,
) -> Invoice:
    """Move a draft's deadline to (moment drafted + the grace period its settings give now).

    Nothing changes for an invoice that is no longer a plain draft (held, finalized,
    closed), or whose grace period the period itself fixed; an unchanged deadline
    records nothing. The caller compares the returned ``expected_finalization_at`` with
    its clock: a deadline in the past means finalize now.
    """
    with UnitOfWork(engine) as uow:
        invoice = uow.invoices.lock(invoice_id)
        if invoice.status != InvoiceStatus.DRAFT or invoice.awaiting_approval:
            return invoice
        drafted_at, fixed = uow.invoices.grace_period_start(invoice_id)
        if drafted_at is None or fixed:
            return invoice
        context = uow.catalog.billing_context(invoice.subscription_external_id)
        deadline = drafted_at + context.grace_period_days * DAY
        if deadline == invoice.expected_finalization_at:
            return invoice
        moved = uow.invoices.set_deadline(invoice_id, deadline)
        was = invoice.expected_finalization_at
        record_change(
            uow,
            key or new_key(),
            moved,
            TimelineKind.GRACE_PERIOD_CHANGED,
            actor,
            f"grace period is now {context.grace_period_days} days: it ends at "
            f"{deadline.isoformat()} (was {was.isoformat() if was else 'unknown'})",
        )
        uow.commit()
        return moved


def drafts_to_follow_settings(engine: Engine) -> list[DraftToFollow]:
    """Running drafts whose deadline differs from what their settings now give.

    Held, fixed (the period set its own grace period) and pre-release drafts (no
    ``drafted_at``) are left out. Running it again after the drafts followed finds none.
    """
    with UnitOfWork(engine) as uow:
        return [
            DraftToFollow(
                invoice_id=row.invoice_id,
                subscription_external_id=row.subscription_external_id,
                period_start=row.period_start,
                expected_finalization_at=row.expected_finalization_at,
                follows_at=row.drafted_at + row.grace_period_days * DAY,
                workflow_id=period_workflow_id(
                    row.subscription_external_id, row.period_start, row.timezone or "UTC"
                ),
            )
            for row in uow.invoices.running_drafts_with_grace_periods()
            if row.expected_finalization_at != row.drafted_at + row.grace_period_days * DAY
        ]
