"""The webhooks repository: the outbox and the delivery log.

Deliveries are written in the unit of work that changes the invoice (the outbox), so a
webhook exists if and only if its finalization committed. The webhook activity then
reads a delivery, signs its stored body with its endpoint's secret (fetched at send
time, so secrets never enter workflow history or logs) and logs every attempt.

Statuses (:data:`billing.models.DeliveryStatus`): ``pending`` -> ``retrying`` ->
``succeeded`` | ``failed``; an operator can put a failed delivery back to ``pending``.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Row, bindparam, select, update
from sqlalchemy.orm import Session

from billing.errors import NotFound
from billing.models import DeliveryStatus, Invoice
from store._rows import insert_or_skip, table_of
from store.schema import WebhookDeliveryRow, WebhookEndpointRow

__all__ = [
    "INVOICE_APPROVAL_REQUIRED",
    "INVOICE_CREATED",
    "INVOICE_DRAFTED",
    "WebhookDelivery",
    "WebhookRepository",
    "delivery_id",
    "webhook_body",
]

INVOICE_CREATED = "invoice.created"
INVOICE_DRAFTED = "invoice.drafted"
INVOICE_APPROVAL_REQUIRED = "invoice.approval_required"
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
    """The JSON text that is signed and sent (docs/architecture.md, webhooks)."""
    payload = {
        "webhook_type": webhook_type,
        "object_type": "invoice",
        "invoice": invoice.model_dump(mode="json"),
    }
    return json.dumps(payload, separators=(",", ":"))


# Core statements over the table (no ORM instances: the webhook activity reads and writes
# a delivery on every attempt); the columns in the model's field order.
_DELIVERIES = table_of(WebhookDeliveryRow)
_ENDPOINTS = table_of(WebhookEndpointRow)
_COLUMNS = tuple(_DELIVERIES.c[name] for name in WebhookDelivery.model_fields)
_SELECT_DELIVERY = select(*_COLUMNS).where(_DELIVERIES.c.id == bindparam("delivery_id"))
_SELECT_ENDPOINTS = select(_ENDPOINTS.c.code, _ENDPOINTS.c.url).order_by(_ENDPOINTS.c.code)
_SELECT_SECRET = (
    select(_DELIVERIES.c.endpoint_code, _ENDPOINTS.c.secret)
    .select_from(
        _DELIVERIES.outerjoin(_ENDPOINTS, _ENDPOINTS.c.code == _DELIVERIES.c.endpoint_code)
    )
    .where(_DELIVERIES.c.id == bindparam("delivery_id"))
)


def _model(row: Row[Any] | None, id: str) -> WebhookDelivery:
    if row is None:
        raise NotFound(f"webhook delivery {id!r} does not exist")
    return WebhookDelivery(**row._mapping)


class WebhookRepository:
    """The outbox and delivery log inside one unit of work."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def queue(self, invoice: Invoice, webhook_type: str, at: datetime) -> list[str]:
        """Outbox rows of ``invoice`` for every endpoint; idempotent. Returns their ids."""
        session = self._session
        endpoints = session.execute(_SELECT_ENDPOINTS).all()
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
            insert_or_skip(
                session, WebhookDeliveryRow, ("invoice_id", "webhook_type", "endpoint_code")
            ),
            rows,
        )
        # Every delivery's endpoint still exists (the foreign key keeps it), so the
        # invoice's deliveries of this type are exactly these rows: no need to read them.
        return [row["id"] for row in rows]

    def delivery_ids(self, invoice_id: str, webhook_type: str) -> list[str]:
        """The ids of the invoice's deliveries of ``webhook_type``, by endpoint."""
        return list(
            self._session.scalars(
                select(_DELIVERIES.c.id)
                .where(
                    _DELIVERIES.c.invoice_id == invoice_id,
                    _DELIVERIES.c.webhook_type == webhook_type,
                )
                .order_by(_DELIVERIES.c.endpoint_code)
            )
        )

    def get(self, id: str) -> WebhookDelivery:
        """The delivery; raises :class:`NotFound` when there is none."""
        found = self._session.execute(_SELECT_DELIVERY, {"delivery_id": id}).one_or_none()
        return _model(found, id)

    def endpoint_secret(self, id: str) -> str:
        """The signing secret of delivery ``id``'s endpoint. Never log or return it further."""
        found = self._session.execute(_SELECT_SECRET, {"delivery_id": id}).one_or_none()
        if found is None:
            raise NotFound(f"webhook delivery {id!r} does not exist")
        if found.secret is None:
            raise NotFound(f"webhook endpoint {found.endpoint_code!r} does not exist")
        return str(found.secret)

    def log_attempt(
        self,
        id: str,
        *,
        status: DeliveryStatus,
        http_status: int | None,
        error: str | None,
        at: datetime,
    ) -> WebhookDelivery:
        """Count one more attempt with its outcome; returns the delivery as stored."""
        found = self._session.execute(
            update(_DELIVERIES)
            .where(_DELIVERIES.c.id == id)
            .values(
                status=status,
                attempts=_DELIVERIES.c.attempts + 1,
                last_http_status=http_status,
                last_error=error,
                updated_at=at,
            )
            .returning(*_COLUMNS)
        ).one_or_none()
        return _model(found, id)

    def set_pending(self, id: str) -> WebhookDelivery:
        """Put the delivery back to ``pending`` (attempts are kept for the record)."""
        found = self._session.execute(
            update(_DELIVERIES)
            .where(_DELIVERIES.c.id == id)
            .values(status="pending", last_error=None)
            .returning(*_COLUMNS)
        ).one_or_none()
        return _model(found, id)

    def find_all(
        self, *, status: DeliveryStatus | None = None, invoice_id: str | None = None
    ) -> list[WebhookDelivery]:
        """Deliveries, oldest first, optionally of one status or one invoice."""
        statement = select(*_COLUMNS).order_by(_DELIVERIES.c.created_at, _DELIVERIES.c.id)
        if status is not None:
            statement = statement.where(_DELIVERIES.c.status == status)
        if invoice_id is not None:
            statement = statement.where(_DELIVERIES.c.invoice_id == invoice_id)
        return [WebhookDelivery(**row._mapping) for row in self._session.execute(statement)]
