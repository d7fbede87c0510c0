"""The webhook delivery log: read a delivery, log attempts, operator retries, listing.

Deliveries are queued by the invoice operations (:mod:`services.invoices`) in the same
unit of work as the invoice change; the webhook activity sends them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from billing.errors import NotFound
from billing.models import DeliveryStatus
from billing.timeline import SYSTEM_ACTOR, TimelineKind
from store.unit_of_work import UnitOfWork
from store.webhooks import WebhookDelivery

__all__ = [
    "WebhookDelivery",
    "delivery_to_send",
    "get_delivery",
    "list_deliveries",
    "record_attempt",
    "reset_for_retry",
]

_MAX_ERROR_LENGTH = 2000


def get_delivery(engine: Engine, id: str) -> WebhookDelivery:
    """The delivery; raises ``NotFound`` when there is none."""
    with UnitOfWork(engine) as uow:
        return uow.webhooks.get(id)


def delivery_to_send(engine: Engine, id: str) -> tuple[WebhookDelivery, str | None]:
    """What one attempt needs, in one transaction: the delivery and, unless it already
    succeeded (nothing is sent again), its endpoint's signing secret.

    Raises ``NotFound`` for an unknown delivery or a deleted endpoint.
    """
    with UnitOfWork(engine) as uow:
        delivery = uow.webhooks.get(id)
        if str(delivery.status) == "succeeded":
            return delivery, None
        return delivery, uow.webhooks.endpoint_secret(id)


def record_attempt(
    engine: Engine,
    id: str,
    *,
    http_status: int | None,
    error: str | None,
    succeeded: bool,
    final: bool,
    at: datetime,
) -> WebhookDelivery:
    """Log one delivery attempt. ``final`` marks the last try: a failure becomes ``failed``.

    Once ``succeeded`` a delivery is settled: a late or repeated record changes nothing.
    A delivery that succeeds or finally fails is written to the invoice timeline.
    """
    with UnitOfWork(engine) as uow:
        delivery = uow.webhooks.get(id)
        if delivery.status == "succeeded":
            return delivery
        status: DeliveryStatus = "succeeded" if succeeded else ("failed" if final else "retrying")
        logged = uow.webhooks.log_attempt(
            id,
            status=status,
            http_status=http_status,
            error=None if succeeded else (error or f"HTTP {http_status}")[:_MAX_ERROR_LENGTH],
            at=at,
        )
        if status != "retrying":
            # Only the total is needed: one column, not the invoice with its fees.
            total = uow.invoices.total(logged.invoice_id)
            if total is None:
                raise NotFound(f"invoice {logged.invoice_id!r} does not exist")
            outcome = "delivered" if succeeded else f"failed ({logged.last_error})"
            uow.timeline.record(
                f"{logged.invoice_id}/webhook/{id}/{logged.attempts}",
                logged.invoice_id,
                TimelineKind.WEBHOOK_DELIVERED if succeeded else TimelineKind.WEBHOOK_FAILED,
                at=at,
                actor=SYSTEM_ACTOR,
                summary=f"{logged.webhook_type} to {logged.endpoint_code} {outcome} after "
                f"{logged.attempts} attempt(s)",
                total_amount_cents=total,
            )
        uow.commit()
        return logged


def list_deliveries(
    engine: Engine, *, status: DeliveryStatus | None = None, invoice_id: str | None = None
) -> list[WebhookDelivery]:
    """Deliveries, oldest first, optionally of one status or one invoice."""
    with UnitOfWork(engine) as uow:
        return uow.webhooks.find_all(status=status, invoice_id=invoice_id)


def reset_for_retry(engine: Engine, id: str) -> WebhookDelivery:
    """An operator's retry: back to ``pending`` (attempts are kept for the record).

    A succeeded delivery is left as it is: receivers already have it.
    """
    with UnitOfWork(engine) as uow:
        delivery = uow.webhooks.get(id)
        if delivery.status == "succeeded":
            return delivery
        reset = uow.webhooks.set_pending(id)
        uow.commit()
        return reset
