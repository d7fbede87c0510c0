"""Drafts, fee adjustments and finalization, as the invoice activities use them."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy
from sqlalchemy import Engine, text

from billing.errors import InvoiceNotEditable, NotFound, UnknownCharge
from billing.models import AdjustedFee, AdjustmentMode, InvoiceStatus
from services.catalog import load_catalog
from services.coupons import apply_coupon, get_wallet, list_applied_coupons, top_up_wallet
from services.finalization import finalize_invoice
from services.invoices import (
    adjust_fee,
    create_draft,
    draft_invoice,
    find_invoice,
    get_invoice,
    list_adjustments,
    list_invoices,
    queue_drafted_webhook,
    refresh_draft,
    remove_fee_adjustment,
)
from services.usage import record_usage
from services.webhooks import get_delivery, list_deliveries
from tests.services.support import draft_at_once, event, january

NORTHWIND = "sub_northwind_growth"  # acme_us, $299 plan, $50 coupon, $100 of credits
KOALA_PAYG = "sub_koala_payg"  # usage only, customer says skip
ISSUED_AT = datetime(2026, 2, 4, 5, tzinfo=UTC)


def _calls(count: int, subscription: str = NORTHWIND, prefix: str = "call") -> list:  # type: ignore[type-arg]
    return [
        event(subscription, f"{prefix}-{index}", "api_calls", "2026-01-10T12:00:00+00:00")
        for index in range(count)
    ]


def test_draft_is_idempotent_and_refresh_picks_up_late_usage(catalog_engine: Engine) -> None:
    start, end = january("America/New_York")
    draft = create_draft(catalog_engine, NORTHWIND, start, end)
    assert (draft.status, draft.number, draft.currency) == (
        InvoiceStatus.DRAFT,
        "ACME-DRAFT",
        "USD",
    )
    assert [fee.code for fee in draft.fees] == ["subscription"]
    assert draft.fees_amount_cents == 29_900
    assert draft.coupons_amount_cents == 0 and draft.prepaid_credit_amount_cents == 0
    assert create_draft(catalog_engine, NORTHWIND, start, end) == draft
    assert find_invoice(catalog_engine, NORTHWIND, start) == draft
    assert find_invoice(catalog_engine, NORTHWIND, end) is None

    # 70,000 calls: 50,000 free, then 2 packages of 10,000 at $10.
    events = [
        event(NORTHWIND, f"c{i}", "api_calls", "2026-01-20T12:00:00+00:00") for i in range(70_000)
    ]
    record_usage(catalog_engine, NORTHWIND, start, end, events)
    refreshed = refresh_draft(catalog_engine, draft.id).invoice
    calls = next(fee for fee in refreshed.fees if fee.code == "api_calls")
    assert (calls.units, calls.events_count, calls.amount_cents) == (Decimal(70_000), 70_000, 2_000)
    assert refreshed.fees_amount_cents == 31_900
    assert get_invoice(catalog_engine, draft.id) == refreshed


def test_adjustments_survive_refresh_and_can_be_removed(catalog_engine: Engine) -> None:
    start, end = january("America/New_York")
    draft = create_draft(catalog_engine, NORTHWIND, start, end)
    record_usage(catalog_engine, NORTHWIND, start, end, _calls(3))

    adjusted = adjust_fee(
        catalog_engine,
        draft.id,
        AdjustedFee(
            charge_code="peak_storage_gb",
            mode=AdjustmentMode.AMOUNT,
            units=Decimal(1),
            unit_amount=Decimal("12.34"),
            display_name="Storage (goodwill)",
        ),
    ).invoice
    storage = next(fee for fee in adjusted.fees if fee.code == "peak_storage_gb")
    assert (storage.amount_cents, storage.adjusted, storage.display_name) == (
        1_234,
        True,
        "Storage (goodwill)",
    )
    # Later usage does not move an adjusted fee.
    record_usage(
        catalog_engine,
        NORTHWIND,
        start,
        end,
        [event(NORTHWIND, "s1", "peak_storage_gb", "2026-01-12T00:00:00+00:00", gb=500)],
    )
    refreshed = refresh_draft(catalog_engine, draft.id).invoice
    assert next(f for f in refreshed.fees if f.code == "peak_storage_gb").amount_cents == 1_234
    assert [a.charge_code for a in list_adjustments(catalog_engine, draft.id)] == [
        "peak_storage_gb"
    ]

    restored = remove_fee_adjustment(catalog_engine, draft.id, "peak_storage_gb").invoice
    storage = next(fee for fee in restored.fees if fee.code == "peak_storage_gb")
    assert (storage.amount_cents, storage.adjusted) == (5_000, False)  # 500 GB x $0.10
    assert list_adjustments(catalog_engine, draft.id) == []

    with pytest.raises(
        UnknownCharge, match="charge 'seats' is not part of this subscription's plan"
    ):
        adjust_fee(
            catalog_engine,
            draft.id,
            AdjustedFee(charge_code="seats", mode=AdjustmentMode.UNITS, units=Decimal(1)),
        )


def test_finalize_applies_coupon_and_credits_once(catalog_engine: Engine) -> None:
    start, end = january("America/New_York")
    draft = create_draft(catalog_engine, NORTHWIND, start, end)

    outcome = finalize_invoice(catalog_engine, draft.id, ISSUED_AT)
    invoice = outcome.invoice
    assert (invoice.status, invoice.number) == (InvoiceStatus.FINALIZED, "ACME-000001")
    assert invoice.issuing_date == ISSUED_AT
    assert invoice.fees_amount_cents == 29_900
    assert invoice.coupons_amount_cents == 5_000
    assert invoice.prepaid_credit_amount_cents == 10_000
    assert invoice.total_amount_cents == 14_900
    assert len(outcome.delivery_ids) == 1

    again = finalize_invoice(catalog_engine, draft.id, datetime(2026, 3, 1, tzinfo=UTC))
    assert again == outcome
    assert get_wallet(catalog_engine, "cust_northwind").balance_cents == 0
    (coupon,) = list_applied_coupons(catalog_engine, "cust_northwind")
    assert (coupon.status, coupon.amount_cents_remaining) == ("terminated", 0)
    with catalog_engine.connect() as connection:
        consumptions = connection.execute(text("SELECT count(*) FROM coupon_consumptions")).scalar()
        debits = connection.execute(
            text("SELECT count(*) FROM wallet_transactions WHERE kind = 'invoice'")
        ).scalar()
    assert (consumptions, debits) == (1, 1)

    delivery = get_delivery(catalog_engine, outcome.delivery_ids[0])
    assert (delivery.webhook_type, delivery.status, delivery.attempts) == (
        "invoice.created",
        "pending",
        0,
    )
    assert '"number":"ACME-000001"' in delivery.body
    assert list_invoices(catalog_engine, status="finalized") == [invoice]


def test_finalized_invoice_refuses_every_change(catalog_engine: Engine) -> None:
    start, end = january("America/New_York")
    draft = create_draft(catalog_engine, NORTHWIND, start, end)
    finalize_invoice(catalog_engine, draft.id, ISSUED_AT)

    with pytest.raises(InvoiceNotEditable, match="ACME-000001 is finalized"):
        refresh_draft(catalog_engine, draft.id)
    with pytest.raises(InvoiceNotEditable):
        adjust_fee(
            catalog_engine,
            draft.id,
            AdjustedFee(charge_code="api_calls", mode=AdjustmentMode.UNITS, units=Decimal(1)),
        )
    with pytest.raises(InvoiceNotEditable):
        remove_fee_adjustment(catalog_engine, draft.id, "api_calls")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE invoices SET total_amount_cents = 1 WHERE id = :id",
        "UPDATE invoices SET status = 'draft' WHERE id = :id",
        "UPDATE invoices SET number = 'ACME-999999' WHERE id = :id",
        "DELETE FROM invoices WHERE id = :id",
        "UPDATE fees SET amount_cents = 1 WHERE invoice_id = :id",
        "DELETE FROM fees WHERE invoice_id = :id",
        "INSERT INTO adjusted_fees (invoice_id, charge_code, mode, display_name)"
        " VALUES (:id, 'api_calls', 'display_name', 'x')",
        "INSERT INTO fees (invoice_id, position, code, kind, display_name, units, amount_cents,"
        " precise_amount, unit_amount, events_count, adjusted, coupons_amount_cents,"
        " taxes_amount_cents, precise_taxes_amount)"
        " VALUES (:id, 9, 'extra', 'charge', 'Extra', 1, 100, 1, 1, 0, false, 0, 0, 0)",
    ],
)
def test_the_database_refuses_changes_to_a_finalized_invoice(
    catalog_engine: Engine, statement: str
) -> None:
    start, end = january("America/New_York")
    draft = create_draft(catalog_engine, NORTHWIND, start, end)
    finalized = finalize_invoice(catalog_engine, draft.id, ISSUED_AT).invoice
    with (
        pytest.raises(sqlalchemy.exc.DBAPIError, match="finalized"),
        catalog_engine.begin() as connection,
    ):
        connection.execute(text(statement), {"id": draft.id})
    assert get_invoice(catalog_engine, draft.id) == finalized


def test_the_database_allows_changes_to_a_draft(catalog_engine: Engine) -> None:
    start, end = january("America/New_York")
    draft = create_draft(catalog_engine, NORTHWIND, start, end)
    with catalog_engine.begin() as connection:
        connection.execute(
            text("UPDATE fees SET display_name = 'Plan' WHERE invoice_id = :id"), {"id": draft.id}
        )
        connection.execute(
            text("UPDATE invoices SET total_amount_cents = 1 WHERE id = :id"), {"id": draft.id}
        )
    assert get_invoice(catalog_engine, draft.id).total_amount_cents == 1


def test_empty_invoice_is_closed_under_skip(catalog_engine: Engine) -> None:
    start, end = january("Australia/Sydney")
    draft = create_draft(catalog_engine, KOALA_PAYG, start, end)
    assert draft.fees == ()
    outcome = finalize_invoice(catalog_engine, draft.id, ISSUED_AT)
    assert outcome.invoice.status == InvoiceStatus.CLOSED
    assert outcome.invoice.number == ""
    assert outcome.delivery_ids == []
    assert list_deliveries(catalog_engine, invoice_id=draft.id) == []
    assert finalize_invoice(catalog_engine, draft.id, ISSUED_AT) == outcome
    # The next real invoice of the entity still gets number 1: closing used no number.
    northwind = create_draft(catalog_engine, NORTHWIND, *january("America/New_York"))
    assert finalize_invoice(catalog_engine, northwind.id, ISSUED_AT).invoice.number == "ACME-000001"


def test_usage_invoice_under_skip_is_finalized(catalog_engine: Engine) -> None:
    start, end = january("Australia/Sydney")
    record_usage(catalog_engine, KOALA_PAYG, start, end, _calls(1500, KOALA_PAYG))
    draft = create_draft(catalog_engine, KOALA_PAYG, start, end)
    invoice = finalize_invoice(catalog_engine, draft.id, ISSUED_AT).invoice
    assert (invoice.status, invoice.total_amount_cents) == (InvoiceStatus.FINALIZED, 150)


def test_coupons_and_credits_added_during_grace_apply_only_at_finalization(
    catalog_engine: Engine,
) -> None:
    start, end = january("Asia/Tokyo")
    draft = create_draft(catalog_engine, "sub_sakura_starter", start, end)
    apply_coupon(
        catalog_engine,
        customer_external_id="cust_sakura",
        coupon_code="partner_5",
        applied_coupon_id="ac-sakura-partner",
    )
    top_up_wallet(
        catalog_engine, customer_external_id="cust_sakura", amount_cents=500, transaction_id="tu-1"
    )
    top_up_wallet(  # a retried top-up adds nothing
        catalog_engine, customer_external_id="cust_sakura", amount_cents=500, transaction_id="tu-1"
    )
    refreshed = refresh_draft(catalog_engine, draft.id).invoice
    assert refreshed.coupons_amount_cents == 0 and refreshed.prepaid_credit_amount_cents == 0
    invoice = finalize_invoice(catalog_engine, draft.id, ISSUED_AT).invoice
    assert invoice.coupons_amount_cents == 245  # 5% of $49
    assert invoice.prepaid_credit_amount_cents == 3_000  # 2,500 from the catalog + 500
    assert invoice.total_amount_cents == 4_900 - 245 - 3_000


def test_drafted_webhook_is_queued_once_when_the_entity_sends_it(catalog_engine: Engine) -> None:
    draft = create_draft(catalog_engine, NORTHWIND, *january("America/New_York"))
    first = queue_drafted_webhook(catalog_engine, draft.id)
    assert len(first) == 1
    assert queue_drafted_webhook(catalog_engine, draft.id) == first
    assert get_delivery(catalog_engine, first[0]).webhook_type == "invoice.drafted"
    brandt = create_draft(catalog_engine, "sub_brandt_team", *january("Europe/Berlin"))
    assert queue_drafted_webhook(catalog_engine, brandt.id) == []  # acme_eu does not send it


def test_draft_invoice_is_one_idempotent_step(catalog_engine: Engine) -> None:
    start, end = january("America/New_York")
    outcome = draft_invoice(catalog_engine, NORTHWIND, start, end)
    assert outcome.invoice == create_draft(catalog_engine, NORTHWIND, start, end)
    assert outcome.settings.customer_external_id == "cust_northwind"
    assert len(outcome.delivery_ids) == 1
    assert get_delivery(catalog_engine, outcome.delivery_ids[0]).webhook_type == "invoice.drafted"
    repeat = draft_invoice(catalog_engine, NORTHWIND, start, end)
    # The same draft and deliveries; the preview is priced again at the repeat's "now".
    assert repeat.model_copy(update={"preview": None}) == outcome.model_copy(
        update={"preview": None}
    )
    assert outcome.preview is not None and repeat.preview is not None
    assert repeat.preview.model_copy(update={"issuing_date": None}) == outcome.preview.model_copy(
        update={"issuing_date": None}
    )
    brandt = draft_invoice(catalog_engine, "sub_brandt_team", *january("Europe/Berlin"))
    assert brandt.delivery_ids == []  # acme_eu does not send it


def test_a_grace_period_of_zero_is_finalized_by_the_draft_step(catalog_engine: Engine) -> None:
    """As the draft and the finalization one after the other would: the same invoice,
    coupon and credits once, one number, ``invoice.drafted`` and ``invoice.created``."""
    start, end = january("America/New_York")
    outcome = draft_at_once(catalog_engine, NORTHWIND, (start, end), ISSUED_AT)
    assert outcome.invoice.status == InvoiceStatus.DRAFT and outcome.preview is None
    assert get_delivery(catalog_engine, outcome.delivery_ids[0]).webhook_type == "invoice.drafted"
    assert outcome.finalization is not None
    invoice = outcome.finalization.invoice
    assert (invoice.status, invoice.number, invoice.issuing_date) == (
        InvoiceStatus.FINALIZED,
        "ACME-000001",
        ISSUED_AT,
    )
    assert (invoice.fees_amount_cents, invoice.coupons_amount_cents) == (29_900, 5_000)
    assert (invoice.prepaid_credit_amount_cents, invoice.total_amount_cents) == (10_000, 14_900)
    (created,) = outcome.finalization.delivery_ids
    assert get_delivery(catalog_engine, created).webhook_type == "invoice.created"
    assert get_wallet(catalog_engine, "cust_northwind").balance_cents == 0
    # A repeat (the step run again after a crash) finalizes nothing twice.
    repeat = draft_at_once(catalog_engine, NORTHWIND, (start, end), ISSUED_AT)
    assert repeat.finalization == outcome.finalization
    assert repeat.invoice == invoice and repeat.delivery_ids == outcome.delivery_ids
    assert finalize_invoice(catalog_engine, invoice.id, ISSUED_AT) == outcome.finalization


def test_the_draft_step_finalizes_only_when_asked_and_due(catalog_engine: Engine) -> None:
    start, end = january("America/New_York")
    not_asked = draft_invoice(catalog_engine, NORTHWIND, start, end, grace_period_seconds=0)
    assert not_asked.finalization is None and not_asked.preview is not None
    brandt = draft_invoice(  # the customer's grace period (days) is not over yet
        catalog_engine, "sub_brandt_team", *january("Europe/Berlin"), finalize_when_due=True
    )
    assert brandt.finalization is None and brandt.invoice.status == InvoiceStatus.DRAFT
    # Empty under skip: closed by the same step, no number, no webhook.
    koala = draft_at_once(catalog_engine, KOALA_PAYG, january("Australia/Sydney"), ISSUED_AT)
    assert koala.finalization is not None
    assert koala.finalization.invoice.status == InvoiceStatus.CLOSED
    assert (koala.finalization.invoice.number, koala.finalization.delivery_ids) == ("", [])


def test_unknown_invoice(catalog_engine: Engine) -> None:
    with pytest.raises(NotFound):
        get_invoice(catalog_engine, "nope")
    with pytest.raises(NotFound):
        finalize_invoice(catalog_engine, "nope", ISSUED_AT)


def _many_subscriptions(count: int) -> dict[str, object]:
    return {
        "billing_entities": [{"code": "bulk", "name": "Bulk", "invoice_prefix": "BULK"}],
        "billable_metrics": [{"code": "calls", "aggregation_type": "count"}],
        "plans": [{"code": "flat", "amount_cents": 1_000}],
        "customers": [
            {"external_id": f"c{i}", "billing_entity_code": "bulk"} for i in range(count)
        ],
        "subscriptions": [
            {
                "external_id": f"s{i}",
                "customer_external_id": f"c{i}",
                "plan_code": "flat",
                "started_at": "2025-01-01T00:00:00Z",
            }
            for i in range(count)
        ],
        "webhook_endpoints": [{"code": "hook", "url": "http://127.0.0.1:1/h", "secret": "s"}],
    }


@pytest.mark.parametrize("workers", [30])
def test_numbering_is_gapless_under_concurrent_finalizations(engine: Engine, workers: int) -> None:
    load_catalog(engine, _many_subscriptions(workers))
    start, end = january("UTC")
    drafts = [create_draft(engine, f"s{i}", start, end) for i in range(workers)]
    barrier = threading.Barrier(workers)
    numbers: list[str] = []
    errors: list[BaseException] = []

    def finalize(invoice_id: str) -> None:
        try:
            barrier.wait()
            numbers.append(finalize_invoice(engine, invoice_id, ISSUED_AT).invoice.number)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=finalize, args=(d.id,)) for d in drafts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(numbers) == [f"BULK-{n:06d}" for n in range(1, workers + 1)]
    assert len(list_deliveries(engine, status="pending")) == workers
