"""Webhook outbox and delivery log.

Deliveries are written in the transaction that changes the invoice (the outbox), so a
webhook exists if and only if its finalization committed. The webhook activity then
reads a delivery, signs its stored body with :func:`endpoint_secret` (fetched at send
time, so secrets never enter workflow history or logs) and records every attempt.

Statuses: ``pending`` -> ``retrying`` -> ``succeeded`` | ``failed``; an operator can
put a failed delivery back to ``pending`` with :func:`reset_for_retry`.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from billing.errors import NotFound
from billing.models import Invoice
from store._rows import dialect_insert, transaction
from store.schema import WebhookDeliveryRow, WebhookEndpointRow

__all__ = [
    "DeliveryStatus",
    "WebhookDelivery",
    "delivery_id",
    "endpoint_secret",
    "get_delivery",
    "list_deliveries",
    "queue_deliveries",
    "record_attempt",
    "reset_for_retry",
    "webhook_body",
]

DeliveryStatus = Literal["pending", "retrying", "succeeded", "failed"]
INVOICE_CREATED = "invoice.created"
INVOICE_DRAFTED = "invoice.drafted"
_DELIVERY_NAMESPACE = uuid.UUID("6f1c1f55-8d0e-4a43-9d39-6f3f0c4a7b21")


class WebhookDelivery(BaseModel):
    """One webhook to one endpoint, with the log of its delivery."""

    model_config = ConfigDict(frozen=True)

    id: str
    webhook_type: str
    invoice_id: str
    endpoint_code: str
    endpoint_url: str
    status: DeliveryStatus
    attempts: int
    last_http_status: int | None
    last_error: str | None
    body: str
    created_at: datetime
    updated_at: datetime


def delivery_id(invoice_id: str, webhook_type: str, endpoint_code: str) -> str:
    """Deterministic id: the same webhook queued twice is the same delivery."""
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{invoice_id}/{webhook_type}/{endpoint_code}"))


def webhook_body(webhook_type: str, invoice: Invoice) -> str:
    """The JSON text that is signed and sent (DESIGN.md section 4, Webhooks)."""
    payload = {
        "webhook_type": webhook_type,
        "object_type": "invoice",
        "invoice": invoice.model_dump(mode="json"),
    }
    return json.dumps(payload, separators=(",", ":"))


def _model(row: WebhookDeliveryRow) -> WebhookDelivery:
    status: DeliveryStatus = row.status  # type: ignore[assignment]
    return WebhookDelivery(
        id=row.id,
        webhook_type=row.webhook_type,
        invoice_id=row.invoice_id,
        endpoint_code=row.endpoint_code,
        endpoint_url=row.endpoint_url,
        status=status,
        attempts=row.attempts,
        last_http_status=row.last_http_status,
        last_error=row.last_error,
        body=row.body,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def queue_deliveries(
    session: Session, invoice: Invoice, webhook_type: str, at: datetime
) -> list[str]:
    """Outbox rows for every endpoint, inside the caller's transaction; idempotent."""
    endpoints = session.scalars(select(WebhookEndpointRow).order_by(WebhookEndpointRow.code)).all()
    if not endpoints:
        return []
    body = webhook_body(webhook_type, invoice)
    rows = [
        {
            "id": delivery_id(invoice.id, webhook_type, endpoint.code),
            "invoice_id": invoice.id,
            "webhook_type": webhook_type,
            "endpoint_code": endpoint.code,
            "endpoint_url": endpoint.url,
            "status": "pending",
            "attempts": 0,
            "last_http_status": None,
            "last_error": None,
            "body": body,
            "created_at": at,
            "updated_at": at,
        }
        for endpoint in endpoints
    ]
    session.execute(
        dialect_insert(session, WebhookDeliveryRow).on_conflict_do_nothing(
            index_elements=["invoice_id", "webhook_type", "endpoint_code"]
        ),
        rows,
    )
    return delivery_ids_of(session, invoice.id, webhook_type)


def delivery_ids_of(session: Session, invoice_id: str, webhook_type: str) -> list[str]:
    return list(
        session.scalars(
            select(WebhookDeliveryRow.id)
            .where(
                WebhookDeliveryRow.invoice_id == invoice_id,
                WebhookDeliveryRow.webhook_type == webhook_type,
            )
            .order_by(WebhookDeliveryRow.endpoint_code)
        )
    )


def _get(session: Session, id: str) -> WebhookDeliveryRow:
    row = session.scalar(
        select(WebhookDeliveryRow)
        .where(WebhookDeliveryRow.id == id)
        .execution_options(populate_existing=True)
    )
    if row is None:
        raise NotFound(f"webhook delivery {id!r} does not exist")
    return row


def get_delivery(engine: Engine, id: str) -> WebhookDelivery:
    with transaction(engine) as session:
        return _model(_get(session, id))


def endpoint_secret(engine: Engine, id: str) -> str:
    """The signing secret of delivery ``id``'s endpoint. Never log or return it further."""
    with transaction(engine) as session:
        row = _get(session, id)
        secret = session.scalar(
            select(WebhookEndpointRow.secret).where(WebhookEndpointRow.code == row.endpoint_code)
        )
        if secret is None:
            raise NotFound(f"webhook endpoint {row.endpoint_code!r} does not exist")
        return secret


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
    """
    with transaction(engine) as session:
        row = _get(session, id)
        if row.status == "succeeded":
            return _model(row)
        status = "succeeded" if succeeded else ("failed" if final else "retrying")
        session.execute(
            update(WebhookDeliveryRow)
            .where(WebhookDeliveryRow.id == id)
            .values(
                status=status,
                attempts=WebhookDeliveryRow.attempts + 1,
                last_http_status=http_status,
                last_error=None if succeeded else (error or f"HTTP {http_status}")[:2000],
                updated_at=at,
            )
        )
        return _model(_get(session, id))


def list_deliveries(
    engine: Engine, *, status: DeliveryStatus | None = None, invoice_id: str | None = None
) -> list[WebhookDelivery]:
    """Deliveries, oldest first, optionally of one status or one invoice."""
    with transaction(engine) as session:
        statement = select(WebhookDeliveryRow).order_by(
            WebhookDeliveryRow.created_at, WebhookDeliveryRow.id
        )
        if status is not None:
            statement = statement.where(WebhookDeliveryRow.status == status)
        if invoice_id is not None:
            statement = statement.where(WebhookDeliveryRow.invoice_id == invoice_id)
        return [_model(row) for row in session.scalars(statement)]


def reset_for_retry(engine: Engine, id: str) -> WebhookDelivery:
    """An operator's retry: back to ``pending`` (attempts are kept for the record).

    A succeeded delivery is left as it is: receivers already have it.
    """
    with transaction(engine) as session:
        row = _get(session, id)
        if row.status != "succeeded":
            session.execute(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.id == id)
                .values(status="pending", last_error=None)
            )
        return _model(_get(session, id))
