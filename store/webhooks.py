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

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from billing.errors import NotFound
from billing.models import DeliveryStatus, Invoice
from store._rows import dialect_insert
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


class WebhookRepository:
    """The outbox and delivery log inside one unit of work."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def queue(self, invoice: Invoice, webhook_type: str, at: datetime) -> list[str]:
        """Outbox rows of ``invoice`` for every endpoint; idempotent. Returns their ids."""
        session = self._session
        endpoints = session.execute(
            select(WebhookEndpointRow.code, WebhookEndpointRow.url).order_by(
                WebhookEndpointRow.code
            )
        ).all()
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
        # Every delivery's endpoint still exists (the foreign key keeps it), so the
        # invoice's deliveries of this type are exactly these rows: no need to read them.
        return [row["id"] for row in rows]

    def delivery_ids(self, invoice_id: str, webhook_type: str) -> list[str]:
        """The ids of the invoice's deliveries of ``webhook_type``, by endpoint."""
        return list(
            self._session.scalars(
                select(WebhookDeliveryRow.id)
                .where(
                    WebhookDeliveryRow.invoice_id == invoice_id,
                    WebhookDeliveryRow.webhook_type == webhook_type,
                )
                .order_by(WebhookDeliveryRow.endpoint_code)
            )
        )

    def _row(self, id: str) -> WebhookDeliveryRow:
        row = self._session.scalar(
            select(WebhookDeliveryRow)
            .where(WebhookDeliveryRow.id == id)
            .execution_options(populate_existing=True)
        )
        if row is None:
            raise NotFound(f"webhook delivery {id!r} does not exist")
        return row

    def get(self, id: str) -> WebhookDelivery:
        """The delivery; raises :class:`NotFound` when there is none."""
        return _model(self._row(id))

    def endpoint_secret(self, id: str) -> str:
        """The signing secret of delivery ``id``'s endpoint. Never log or return it further."""
        row = self._row(id)
        secret = self._session.scalar(
            select(WebhookEndpointRow.secret).where(WebhookEndpointRow.code == row.endpoint_code)
        )
        if secret is None:
            raise NotFound(f"webhook endpoint {row.endpoint_code!r} does not exist")
        return secret

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
        self._session.execute(
            update(WebhookDeliveryRow)
            .where(WebhookDeliveryRow.id == id)
            .values(
                status=status,
                attempts=WebhookDeliveryRow.attempts + 1,
                last_http_status=http_status,
                last_error=error,
                updated_at=at,
            )
        )
        return self.get(id)

    def set_pending(self, id: str) -> WebhookDelivery:
        """Put the delivery back to ``pending`` (attempts are kept for the record)."""
        self._session.execute(
            update(WebhookDeliveryRow)
            .where(WebhookDeliveryRow.id == id)
            .values(status="pending", last_error=None)
        )
        return self.get(id)

    def find_all(
        self, *, status: DeliveryStatus | None = None, invoice_id: str | None = None
    ) -> list[WebhookDelivery]:
        """Deliveries, oldest first, optionally of one status or one invoice."""
        statement = select(WebhookDeliveryRow).order_by(
            WebhookDeliveryRow.created_at, WebhookDeliveryRow.id
        )
        if status is not None:
            statement = statement.where(WebhookDeliveryRow.status == status)
        if invoice_id is not None:
            statement = statement.where(WebhookDeliveryRow.invoice_id == invoice_id)
        return [_model(row) for row in self._session.scalars(statement)]
