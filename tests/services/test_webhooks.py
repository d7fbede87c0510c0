"""The webhook outbox and delivery log."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from billing.errors import NotFound
from services.finalization import finalize_invoice
from services.invoices import create_draft
from services.webhooks import (
    delivery_to_send,
    get_delivery,
    list_deliveries,
    record_attempt,
    reset_for_retry,
)
from tests.services.support import january

AT = datetime(2026, 2, 4, 5, tzinfo=UTC)


def _delivery(engine: Engine) -> str:
    draft = create_draft(engine, "sub_northwind_growth", *january("America/New_York"))
    (delivery_id,) = finalize_invoice(engine, draft.id, AT).delivery_ids
    return delivery_id


def test_outbox_row_carries_the_invoice_json(catalog_engine: Engine) -> None:
    delivery = get_delivery(catalog_engine, _delivery(catalog_engine))
    body = json.loads(delivery.body)
    assert body["webhook_type"] == "invoice.created" and body["object_type"] == "invoice"
    assert body["invoice"]["number"] == "ACME-000001"
    assert body["invoice"]["id"] == delivery.invoice_id
    assert (delivery.endpoint_code, delivery.endpoint_url) == (
        "local_receiver",
        "http://127.0.0.1:8765/webhooks",
    )
    assert delivery.created_at == AT
    assert "whsec" not in delivery.model_dump_json()
    assert delivery_to_send(catalog_engine, delivery.id) == (
        delivery,
        "whsec_test_catalog_secret",
    )


def test_a_delivery_that_succeeded_is_not_given_its_secret_again(catalog_engine: Engine) -> None:
    delivery_id = _delivery(catalog_engine)
    succeeded = record_attempt(
        catalog_engine, delivery_id, http_status=200, error=None, succeeded=True, final=False, at=AT
    )
    assert delivery_to_send(catalog_engine, delivery_id) == (succeeded, None)


def test_attempts_are_logged_until_success(catalog_engine: Engine) -> None:
    delivery_id = _delivery(catalog_engine)
    failed = record_attempt(
        catalog_engine,
        delivery_id,
        http_status=503,
        error=None,
        succeeded=False,
        final=False,
        at=AT + timedelta(seconds=1),
    )
    assert (failed.status, failed.attempts, failed.last_http_status, failed.last_error) == (
        "retrying",
        1,
        503,
        "HTTP 503",
    )
    assert [d.id for d in list_deliveries(catalog_engine, status="retrying")] == [delivery_id]
    done = record_attempt(
        catalog_engine,
        delivery_id,
        http_status=200,
        error=None,
        succeeded=True,
        final=True,
        at=AT + timedelta(seconds=3),
    )
    assert (done.status, done.attempts, done.last_error) == ("succeeded", 2, None)
    assert done.updated_at == AT + timedelta(seconds=3)
    # A repeated record after success changes nothing.
    late = record_attempt(
        catalog_engine,
        delivery_id,
        http_status=500,
        error="late",
        succeeded=False,
        final=True,
        at=AT + timedelta(seconds=9),
    )
    assert late == done
    assert reset_for_retry(catalog_engine, delivery_id) == done


def test_failed_delivery_can_be_retried_by_an_operator(catalog_engine: Engine) -> None:
    delivery_id = _delivery(catalog_engine)
    failed = record_attempt(
        catalog_engine,
        delivery_id,
        http_status=None,
        error="connection refused",
        succeeded=False,
        final=True,
        at=AT,
    )
    assert (failed.status, failed.last_error) == ("failed", "connection refused")
    reset = reset_for_retry(catalog_engine, delivery_id)
    assert (reset.status, reset.attempts) == ("pending", 1)
    assert list_deliveries(catalog_engine, status="failed") == []


def test_unknown_delivery(catalog_engine: Engine) -> None:
    with pytest.raises(NotFound):
        get_delivery(catalog_engine, "nope")
    with pytest.raises(NotFound):
        delivery_to_send(catalog_engine, "nope")
