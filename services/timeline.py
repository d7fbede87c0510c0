"""The invoice timeline: every change of an invoice, recorded in the unit of work that
makes it, under a key (a natural one where the change happens once, such as the draft or
the finalization; else the caller's, such as a workflow step's id, stable across its
retries), so a retried change is recorded once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import Engine

from billing.models import Invoice
from billing.timeline import TimelineEntry, TimelineKind
from store.unit_of_work import UnitOfWork

__all__ = [
    "invoice_timeline",
    "new_key",
    "record_change",
    "record_entry",
    "total_change",
]


def new_key() -> str:
    """A key for a change asked without one (a direct call, not a retried step)."""
    return str(uuid.uuid4())


def record_change(
    uow: UnitOfWork,
    key: str,
    invoice: Invoice,
    kind: TimelineKind,
    actor: str,
    summary: str,
    at: datetime | None = None,
) -> None:
    """Record a change of ``invoice`` (as it is after the change) once under ``key``."""
    record_entry(uow, key, invoice.id, invoice.total_amount_cents, kind, actor, summary, at)


def record_entry(
    uow: UnitOfWork,
    key: str,
    invoice_id: str,
    total_amount_cents: int,
    kind: TimelineKind,
    actor: str,
    summary: str,
    at: datetime | None = None,
) -> None:
    """Record an entry of an invoice not loaded in this unit of work (usage, a refusal)."""
    uow.timeline.record(
        f"{invoice_id}/{key}",
        invoice_id,
        kind,
        at=at or datetime.now(UTC),
        actor=actor,
        summary=summary,
        total_amount_cents=total_amount_cents,
    )


def total_change(before: Invoice, after: Invoice) -> str:
    if before.total_amount_cents == after.total_amount_cents:
        return f"total unchanged at {after.total_amount_cents} cents"
    return f"total {before.total_amount_cents} -> {after.total_amount_cents} cents"


def invoice_timeline(engine: Engine, invoice_id: str) -> list[TimelineEntry]:
    """Every recorded change of the invoice, in order."""
    with UnitOfWork(engine) as uow:
        return uow.timeline.entries(invoice_id)
