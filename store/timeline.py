"""The invoice timeline repository: entries written with the change they record.

Each entry has an idempotency key; a second write of the same key (a retried step whose
first attempt committed) adds nothing. Keys longer than the column are stored as a prefix
and their SHA-256 (:func:`stored_key`), so two long keys never collide.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing.timeline import TimelineEntry, TimelineKind
from store._rows import insert_or_skip
from store.schema import InvoiceTimelineRow

__all__ = ["KEY_LIMIT", "TimelineRepository", "stored_key"]

_SUMMARY_LIMIT = 2000
KEY_LIMIT = 300  # the key column's width
_DIGEST_CHARS = 64  # SHA-256 in hex


def stored_key(key: str) -> str:
    """``key`` as stored: unchanged when it fits the column, else a prefix and the key's
    SHA-256, so that distinct long keys (a step id that embeds a long subscription id)
    stay distinct while the same key maps to the same value on every retry."""
    if len(key) <= KEY_LIMIT:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{key[: KEY_LIMIT - _DIGEST_CHARS - 1]}#{digest}"


class TimelineRepository:
    """Timeline entries inside one unit of work."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def record(
        self,
        key: str,
        invoice_id: str,
        kind: TimelineKind,
        *,
        at: datetime,
        actor: str,
        summary: str,
        total_amount_cents: int,
    ) -> None:
        """Add one entry; nothing when an entry with ``key`` exists."""
        self._session.execute(
            insert_or_skip(self._session, InvoiceTimelineRow, ("key",)),
            [
                {
                    "key": stored_key(key),
                    "invoice_id": invoice_id,
                    "at": at,
                    "kind": kind.value,
                    "actor": actor[:200],
                    "summary": summary[:_SUMMARY_LIMIT],
                    "total_amount_cents": total_amount_cents,
                }
            ],
        )

    def entries(self, invoice_id: str) -> list[TimelineEntry]:
        """The invoice's entries in the order they were written."""
        rows = self._session.scalars(
            select(InvoiceTimelineRow)
            .where(InvoiceTimelineRow.invoice_id == invoice_id)
            .order_by(InvoiceTimelineRow.id)
        )
        return [
            TimelineEntry(
                at=row.at,
                kind=TimelineKind(row.kind),
                actor=row.actor,
                summary=row.summary,
                total_amount_cents=row.total_amount_cents,
            )
            for row in rows
        ]
