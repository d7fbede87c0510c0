"""Helpers for the webhook tests: a tiny catalog whose endpoint is a local sink, and a
finalized invoice with its ``invoice.created`` delivery, made through the store's API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy

from services.catalog import load_catalog
from services.finalization import finalize_invoice
from services.invoices import create_draft

SECRET = "whsec_test_5f0b3c9d2a7e41"
"""The endpoint secret of the test catalog (tests assert it never leaks)."""
SUBSCRIPTION = "sub-webhooks"
PERIOD_START = datetime(2026, 1, 1, tzinfo=UTC)
PERIOD_END = datetime(2026, 2, 1, tzinfo=UTC)


def catalog(endpoint_url: str) -> dict[str, Any]:
    return {
        "billing_entities": [
            {"code": "acme", "name": "Acme Inc", "currency": "USD", "invoice_prefix": "ACME"}
        ],
        "customers": [{"external_id": "cust-webhooks", "billing_entity_code": "acme"}],
        "billable_metrics": [{"code": "api_calls", "aggregation_type": "count"}],
        "plans": [
            {
                "code": "starter",
                "amount_cents": 4900,
                "charges": [
                    {
                        "billable_metric_code": "api_calls",
                        "charge_model": "standard",
                        "properties": {"amount": "0.01"},
                    }
                ],
            }
        ],
        "subscriptions": [
            {
                "external_id": SUBSCRIPTION,
                "customer_external_id": "cust-webhooks",
                "plan_code": "starter",
                "started_at": "2025-12-01T00:00:00Z",
            }
        ],
        "webhook_endpoints": [{"code": "local-sink", "url": endpoint_url, "secret": SECRET}],
    }


def finalized_delivery(engine: sqlalchemy.Engine, endpoint_url: str) -> str:
    """Load the catalog, draft and finalize January's invoice; the delivery's id."""
    load_catalog(engine, catalog(endpoint_url))
    draft = create_draft(engine, SUBSCRIPTION, PERIOD_START, PERIOD_END)
    outcome = finalize_invoice(engine, draft.id, PERIOD_END)
    assert len(outcome.delivery_ids) == 1, outcome.delivery_ids
    return outcome.delivery_ids[0]
