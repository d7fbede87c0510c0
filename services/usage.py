"""Recording usage: each event of a batch accepted or rejected, stored exactly once.

The rule that accepts or refuses one event is :func:`billing.usage.accept_event`. This
service adds what only the store can know: within a batch the first copy of a
transaction id wins, an id already accepted is a duplicate (even when this copy would be
refused), and refused events are kept with their reason.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy import Engine

from billing.models import (
    BillingContext,
    ChargeUsage,
    MalformedBatch,
    RejectedEvent,
    UsageBatch,
    UsageBatchesReceipt,
    UsageEvent,
    UsageReceipt,
    describe_invalid,
)
from billing.timeline import SYSTEM_ACTOR, TimelineKind
from billing.usage import AcceptedEvent, accept_event
from services.timeline import new_key, record_entry
from store.timeline import stored_key
from store.unit_of_work import UnitOfWork

__all__ = ["LISTED_REJECTIONS_BYTES", "period_usage", "record_usage", "record_usage_batches"]

# The refused events a batches receipt lists: far below the 2 MB a step's result may
# take in the workflow's history, whatever the reasons' length.
LISTED_REJECTIONS_BYTES = 256_000


def record_usage(
    engine: Engine,
    subscription_external_id: str,
    period_start: datetime,
    period_end: datetime,
    events: Sequence[UsageEvent],
    *,
    invoice_id: str | None = None,
    key: str | None = None,
    actor: str = SYSTEM_ACTOR,
) -> UsageReceipt:
    """Record a batch of events of one subscription's period, exactly once each.

    ``key``: the recording step's idempotency key. The step's receipt is kept under it
    (with the batch's fingerprint), and the same step run again answers that receipt:
    a step re-executed after its first run committed (a local activity whose workflow
    task was lost, an activity retried after its worker died) must not report its own
    events as duplicates. A run that loses a race with the same step running at once
    answers the winner's receipt too. The receipt is kept until the period is finalized
    or closed (:func:`services.finalization.finalize_invoice` deletes it).
    ``invoice_id``: the period's draft, when the batch arrives in its grace period (late
    usage); a batch that adds events is then written to its timeline (under the same key
    as its receipt).
    """
    receipt_key = None if key is None else _receipt_key(key, events)
    with UnitOfWork(engine) as uow:
        if receipt_key is not None and (kept := uow.usage.receipt(receipt_key)) is not None:
            return kept
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
        receipt = UsageReceipt(
            accepted=inserted,
            duplicates=duplicates + len(accepted) - inserted,
            rejected=rejected,
        )
        if invoice_id is not None and inserted:
            total = uow.invoices.total(invoice_id)
            if total is not None:
                record_entry(
                    uow,
                    receipt_key or new_key(),
                    invoice_id,
                    total,
                    TimelineKind.USAGE_RECORDED,
                    actor,
                    _receipt_text(receipt),
                )
        if receipt_key is not None and not uow.usage.keep_receipt(
            receipt_key, receipt, subscription_external_id, period_start
        ):
            # The same step ran at the same time elsewhere (a re-executed local activity
            # beside its first run) and committed first: this run found its events
            # already stored. Undo it and answer the first run's receipt.
            uow.rollback()
            kept = uow.usage.receipt(receipt_key)
            assert kept is not None, "a receipt that conflicted is committed"
            return kept
        uow.commit()
        return receipt


def record_usage_batches(
    engine: Engine,
    subscription_external_id: str,
    period_start: datetime,
    period_end: datetime,
    batches: Sequence[str],
    *,
    invoice_id: str | None = None,
    key: str | None = None,
) -> UsageBatchesReceipt:
    """Record usage messages as they arrived (the JSON text of a :class:`UsageBatch` each)
    together, as one batch.

    Each message is validated here, where the events are needed, not where it arrived:
    a malformed one is refused whole (listed in ``malformed`` by its position) and the
    others are recorded. The first sender who named themselves is the batch's actor.
    """
    events: list[UsageEvent] = []
    malformed: list[MalformedBatch] = []
    actor: str | None = None
    for position, text in enumerate(batches):
        try:
            batch = UsageBatch.model_validate_json(text)
        except ValidationError as err:
            malformed.append(MalformedBatch(position=position, reason=describe_invalid(err)))
            continue
        events.extend(batch.events)
        actor = actor or batch.requested_by
    receipt = UsageReceipt()
    if events:
        receipt = record_usage(
            engine,
            subscription_external_id,
            period_start,
            period_end,
            events,
            invoice_id=invoice_id,
            key=key,
            actor=actor or SYSTEM_ACTOR,
        )
    listed: list[RejectedEvent] = []
    size = 0
    for rejected in receipt.rejected:
        size += len(rejected.transaction_id) + len(rejected.code) + len(rejected.reason) + 64
        if size > LISTED_REJECTIONS_BYTES:
            break
        listed.append(rejected)
    return UsageBatchesReceipt(
        accepted=receipt.accepted,
        duplicates=receipt.duplicates,
        rejected=listed,
        rejected_not_listed=len(receipt.rejected) - len(listed),
        malformed=malformed,
    )


def _receipt_key(key: str, events: Sequence[UsageEvent]) -> str:
    """The step's key and its batch's fingerprint: a different batch under the same step
    key (an update that came first on a retried workflow task) is not answered with
    another batch's receipt."""
    digest = hashlib.sha256(json.dumps([e.transaction_id for e in events]).encode()).hexdigest()
    return stored_key(f"{key}/usage/{digest[:32]}")


def _receipt_text(receipt: UsageReceipt) -> str:
    """``3 events accepted, 1 duplicate``: what a late batch did (the fees follow on the
    next refresh)."""

    def count(number: int, what: str) -> str:
        return f"{number} {what}{'' if number == 1 else 's'}"

    parts = [f"{count(receipt.accepted, 'event')} accepted"]
    if receipt.duplicates:
        parts.append(count(receipt.duplicates, "duplicate"))
    if receipt.rejected:
        parts.append(f"{len(receipt.rejected)} rejected")
    return ", ".join(parts)


def period_usage(
    engine: Engine, context: BillingContext, period_start: datetime, period_end: datetime
) -> dict[str, ChargeUsage]:
    """Usage of every charge of the plan over ``[period_start, period_end)``."""
    with UnitOfWork(engine) as uow:
        return uow.usage.charge_usage(context, period_start, period_end)
