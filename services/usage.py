"""Recording usage: each event of a batch accepted or rejected, stored exactly once.

The rule that accepts or refuses one event is :func:`billing.usage.accept_event`. This
service adds what only the store can know: within a batch the first copy of a
transaction id wins, an id already accepted is a duplicate (even when this copy would be
refused), and refused events are kept with their reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Engine

from billing.models import BillingContext, ChargeUsage, RejectedEvent, UsageEvent, UsageReceipt
from billing.usage import AcceptedEvent, accept_event
from store.unit_of_work import UnitOfWork

__all__ = ["period_usage", "record_usage"]


def record_usage(
    engine: Engine,
    subscription_external_id: str,
    period_start: datetime,
    period_end: datetime,
    events: Sequence[UsageEvent],
) -> UsageReceipt:
    """Record a batch of events of one subscription's period, exactly once each."""
    with UnitOfWork(engine) as uow:
        context = uow.catalog.billing_context(subscription_external_id)
        first_copies: dict[str, UsageEvent] = {}
        duplicates = 0
        accepted: list[AcceptedEvent] = []
        rejected: list[RejectedEvent] = []
        for event in events:
            if event.transaction_id in first_copies:
                duplicates += 1  # a copy within the batch: the first one wins
                continue
            first_copies[event.transaction_id] = event
            verdict = accept_event(event, context, period_start, period_end)
            if isinstance(verdict, AcceptedEvent):
                accepted.append(verdict)
            else:
                rejected.append(verdict)
        # A refused copy of an event accepted earlier is just a duplicate.
        known = uow.usage.known_transaction_ids(
            subscription_external_id, [r.transaction_id for r in rejected]
        )
        duplicates += sum(1 for r in rejected if r.transaction_id in known)
        rejected = [r for r in rejected if r.transaction_id not in known]
        inserted = uow.usage.add(subscription_external_id, accepted)
        uow.rejections.add_events(
            subscription_external_id,
            [(first_copies[r.transaction_id], r.reason) for r in rejected],
        )
        uow.commit()
        return UsageReceipt(
            accepted=inserted,
            duplicates=duplicates + len(accepted) - inserted,
            rejected=rejected,
        )


def period_usage(
    engine: Engine, context: BillingContext, period_start: datetime, period_end: datetime
) -> dict[str, ChargeUsage]:
    """Usage of every charge of the plan over ``[period_start, period_end)``."""
    with UnitOfWork(engine) as uow:
        return uow.usage.charge_usage(context, period_start, period_end)
