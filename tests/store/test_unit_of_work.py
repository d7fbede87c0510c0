"""The unit of work and its repositories: one transaction, domain models out, no rows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from billing.errors import NotFound
from billing.models import BillingContext, Invoice, InvoiceStatus, Wallet
from billing.usage import AcceptedEvent
from services.catalog import load_catalog
from store.unit_of_work import UnitOfWork
from tests.services.support import event, january

NORTHWIND = "sub_northwind_growth"


def test_nothing_is_written_unless_committed(catalog_engine: Engine) -> None:
    with UnitOfWork(catalog_engine) as uow:
        uow.coupons.top_up("cust_northwind", 500, "uncommitted")
    with UnitOfWork(catalog_engine) as uow:
        before = uow.coupons.wallet("cust_northwind")
        uow.coupons.top_up("cust_northwind", 500, "committed")
        uow.commit()
    with UnitOfWork(catalog_engine) as uow:
        assert uow.coupons.wallet("cust_northwind") == Wallet(
            customer_external_id="cust_northwind", balance_cents=before.balance_cents + 500
        )


def test_an_error_rolls_the_block_back(catalog_engine: Engine) -> None:
    with UnitOfWork(catalog_engine) as uow:
        before = uow.coupons.wallet("cust_northwind")
    with pytest.raises(RuntimeError), UnitOfWork(catalog_engine) as uow:
        uow.coupons.top_up("cust_northwind", 700, "failed")
        raise RuntimeError("boom")
    with UnitOfWork(catalog_engine) as uow:
        assert uow.coupons.wallet("cust_northwind") == before


def test_repositories_return_domain_models(catalog_engine: Engine) -> None:
    start, end = january("America/New_York")
    with UnitOfWork(catalog_engine) as uow:
        context = uow.catalog.billing_context(NORTHWIND)
        assert isinstance(context, BillingContext)
        accepted = AcceptedEvent(
            event=event(NORTHWIND, "t-1", "api_calls", "2026-01-05T10:00:00+00:00")
        )
        assert uow.usage.add(NORTHWIND, [accepted, accepted]) == 1
        assert uow.usage.known_transaction_ids(NORTHWIND, ["t-1", "t-2"]) == {"t-1"}
        assert uow.usage.charge_usage(context, start, end)["api_calls"].events_count == 1
        assert uow.invoices.add_draft("inv-1", "X-DRAFT", context, start, end)
        assert not uow.invoices.add_draft("inv-2", "X-DRAFT", context, start, end)
        draft = uow.invoices.lock("inv-1")
        assert isinstance(draft, Invoice)
        assert (draft.status, draft.number, draft.fees) == (InvoiceStatus.DRAFT, "X-DRAFT", ())
        assert uow.invoices.find_for_period(NORTHWIND, start) == draft
        assert uow.webhooks.queue(draft, "invoice.drafted", datetime.now(UTC))
        with pytest.raises(NotFound):
            uow.invoices.get("inv-2")


def test_the_billing_context_of_a_plan_without_charges(engine: Engine) -> None:
    load_catalog(
        engine,
        {
            "billing_entities": [
                {
                    "code": "be",
                    "name": "BE",
                    "currency": "EUR",
                    "timezone": "UTC",
                    "invoice_prefix": "BE",
                }
            ],
            "customers": [{"external_id": "cust", "billing_entity_code": "be"}],
            "plans": [{"code": "flat", "name": "Flat", "amount_cents": 900}],
            "subscriptions": [
                {
                    "external_id": "sub",
                    "customer_external_id": "cust",
                    "plan_code": "flat",
                    "started_at": "2026-01-01T00:00:00Z",
                }
            ],
        },
    )
    with UnitOfWork(engine) as uow:
        context = uow.catalog.billing_context("sub")
        with pytest.raises(NotFound):
            uow.catalog.billing_context("no_such_subscription")
    assert (context.plan.code, context.plan.amount_cents, context.plan.charges) == ("flat", 900, ())
    assert (context.customer.external_id, context.billing_entity.code) == ("cust", "be")
    assert (context.metrics, context.currency, context.timezone) == ({}, "EUR", "UTC")
