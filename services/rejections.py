"""Refused inputs: kept for operators, listed with refused usage events."""

from __future__ import annotations

from sqlalchemy import Engine

from billing.timeline import SYSTEM_ACTOR, TimelineKind
from services.timeline import record_entry
from store.rejections import RejectionRecord
from store.unit_of_work import UnitOfWork

__all__ = ["RejectionRecord", "list_rejections", "record_rejected_input"]


def record_rejected_input(
    engine: Engine,
    *,
    key: str,
    source: str,
    kind: str,
    payload: str,
    reason: str,
    subscription_external_id: str | None = None,
    invoice_id: str | None = None,
    actor: str = SYSTEM_ACTOR,
) -> None:
    """Keep a refused signal or request for operators; idempotent on ``key``.

    ``invoice_id``: the period's invoice (drafted or not yet), whose timeline then shows
    the refusal under the same ``key``; ``actor``: who sent the refused input.
    """
    with UnitOfWork(engine) as uow:
        uow.rejections.add_input(
            key=key,
            source=source,
            kind=kind,
            payload=payload,
            reason=reason,
            subscription_external_id=subscription_external_id,
        )
        if invoice_id is not None:
            record_entry(
                uow,
                key,
                invoice_id,
                uow.invoices.total(invoice_id) or 0,  # 0: refused before the draft
                TimelineKind.INPUT_REJECTED,
                actor,
                f"{kind} refused: {reason}",
            )
        uow.commit()


def list_rejections(
    engine: Engine, *, subscription_external_id: str | None = None, source: str | None = None
) -> list[RejectionRecord]:
    """Refused inputs and refused events, oldest first (see ``RejectionRepository``)."""
    with UnitOfWork(engine) as uow:
        return uow.rejections.find_all(
            subscription_external_id=subscription_external_id, source=source
        )
