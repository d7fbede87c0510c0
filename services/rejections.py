"""Refused inputs: kept for operators, listed with refused usage events."""

from __future__ import annotations

from sqlalchemy import Engine

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
) -> None:
    """Keep a refused signal or request for operators; idempotent on ``key``."""
    with UnitOfWork(engine) as uow:
        uow.rejections.add_input(
            key=key,
            source=source,
            kind=kind,
            payload=payload,
            reason=reason,
            subscription_external_id=subscription_external_id,
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
