"""The rejections repository: everything refused, kept for senders and operators.

Refused usage events go to ``rejected_events`` (one per subscription and transaction id:
a rejection does not consume the id, so a corrected copy sent later is accepted);
refused signals and requests (a bad fee edit, late usage...) go to ``rejected_inputs``,
idempotent on their key. Both read back as :class:`RejectionRecord`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.orm import Session

from billing.models import UsageEvent
from store._rows import dialect_insert, insert_or_skip, utcnow
from store.schema import RejectedEventRow, RejectedInputRow

__all__ = ["RejectionRecord", "RejectionRepository"]


class RejectionRecord(BaseModel):
    """A refused event or input as the store keeps it (the workflow's view is ``RejectedInput``)."""

    model_config = ConfigDict(frozen=True)

    key: str
    source: str
    kind: str
    subscription_external_id: str | None
    payload: str
    reason: str
    created_at: datetime


class RejectionRepository:
    """Rejections inside one unit of work."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def add_events(
        self, subscription_external_id: str, refused: Sequence[tuple[UsageEvent, str]]
    ) -> None:
        """Keep refused events with their reasons; a known (subscription, id) is kept once."""
        if not refused:
            return
        now = utcnow()
        self._session.execute(
            insert_or_skip(
                self._session, RejectedEventRow, ("subscription_external_id", "transaction_id")
            ),
            [
                {
                    "subscription_external_id": subscription_external_id,
                    "transaction_id": event.transaction_id,
                    "code": event.code,
                    "timestamp": event.timestamp,
                    "properties": event.model_dump(mode="json")["properties"],
                    "reason": reason,
                    "created_at": now,
                }
                for event, reason in refused
            ],
        )

    def add_input(
        self,
        *,
        key: str,
        source: str,
        kind: str,
        payload: str,
        reason: str,
        subscription_external_id: str | None,
    ) -> None:
        """Keep a refused signal or request; idempotent on ``key``."""
        self._session.execute(
            dialect_insert(self._session, RejectedInputRow).on_conflict_do_nothing(
                index_elements=["key"]
            ),
            [
                {
                    "key": key,
                    "source": source,
                    "kind": kind,
                    "subscription_external_id": subscription_external_id,
                    "payload": payload,
                    "reason": reason,
                    "created_at": utcnow(),
                }
            ],
        )

    def find_all(
        self, *, subscription_external_id: str | None = None, source: str | None = None
    ) -> list[RejectionRecord]:
        """Refused inputs and refused events, oldest first.

        Refused events appear with ``source="usage"``, ``kind="usage_event"`` and the key
        ``event/<subscription>/<transaction id>``.
        """
        rejections: list[RejectionRecord] = []
        inputs = select(RejectedInputRow)
        if subscription_external_id is not None:
            inputs = inputs.where(
                RejectedInputRow.subscription_external_id == subscription_external_id
            )
        if source is not None:
            inputs = inputs.where(RejectedInputRow.source == source)
        for row in self._session.scalars(inputs):
            rejections.append(
                RejectionRecord(
                    key=row.key,
                    source=row.source,
                    kind=row.kind,
                    subscription_external_id=row.subscription_external_id,
                    payload=row.payload,
                    reason=row.reason,
                    created_at=row.created_at,
                )
            )
        if source in (None, "usage"):
            events = select(RejectedEventRow)
            if subscription_external_id is not None:
                events = events.where(
                    RejectedEventRow.subscription_external_id == subscription_external_id
                )
            for event in self._session.scalars(events):
                payload = UsageEvent(
                    transaction_id=event.transaction_id,
                    external_subscription_id=event.subscription_external_id,
                    code=event.code,
                    timestamp=event.timestamp,
                    properties=event.properties,
                )
                rejections.append(
                    RejectionRecord(
                        key=f"event/{event.subscription_external_id}/{event.transaction_id}",
                        source="usage",
                        kind="usage_event",
                        subscription_external_id=event.subscription_external_id,
                        payload=payload.model_dump_json(),
                        reason=event.reason,
                        created_at=event.created_at,
                    )
                )
        rejections.sort(key=lambda rejection: (rejection.created_at, rejection.key))
        return rejections
