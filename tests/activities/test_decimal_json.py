"""What a finance team reads: no decimal in exponent form in any JSON, no ``-0.00`` in a table.

Real invoices (SQLite and PostgreSQL) with a tax-free coupon split (``precise_taxes_amount``
was ``0E-25``), tiny and very large usage, tax on a zero fee and a sub-cent adjustment;
their webhooks delivered over real HTTP. Then any invoice (hypothesis) through every
writer: the pydantic payload converter (workflow payloads and query results), the webhook
body, the CLI's JSON and its invoice table.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import pytest_asyncio
import sqlalchemy
from hypothesis import given, settings
from rich.console import Console
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment

from activities.webhooks import DeliverWebhookRequest, WebhookActivities
from billing.models import AdjustedFee, AdjustmentMode, Invoice, UsageEvent
from services.catalog import load_catalog
from services.finalization import finalize_invoice
from services.invoices import adjust_fee, draft_invoice, get_invoice
from services.usage import record_usage
from starter.output import invoice_table, print_json
from starter.webhook_sink import WebhookSink
from store.webhooks import webhook_body
from tests.activities.webhook_support import SECRET
from tests.fixtures.decimals import (
    COUPON_SPLIT,
    NEGATIVE_ZERO_IN_TEXT,
    TAXED,
    FeeValues,
    awkward_fee_values,
    awkward_invoice,
    decimals_catalog,
    unreadable_numbers,
)
from workflows.messages import PeriodPhase, PeriodView

JANUARY = datetime(2026, 1, 1, tzinfo=UTC)
FEBRUARY = datetime(2026, 2, 1, tzinfo=UTC)


def usage(subscription: str, transaction_id: str, code: str, **properties: Any) -> UsageEvent:
    return UsageEvent(
        transaction_id=transaction_id,
        external_subscription_id=subscription,
        code=code,
        timestamp=datetime(2026, 1, 10, tzinfo=UTC),
        properties=properties,
    )


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def deliver(activities: WebhookActivities, delivery_id: str) -> None:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=1, activity_type="deliver_webhook")
    request = DeliverWebhookRequest(
        delivery_id=delivery_id, give_up_at=datetime.now(UTC) + timedelta(hours=1)
    )
    result = await env.run(activities.deliver_webhook, request)
    assert result.status == "succeeded"


def table_text(invoice: Invoice) -> str:
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(invoice_table(invoice))
    return console.export_text()


def payload_texts(invoice: Invoice) -> list[str]:
    """What the Temporal UI shows of the invoice: the query result and an activity result."""
    view = PeriodView(
        subscription_external_id=invoice.subscription_external_id,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        phase=PeriodPhase.DRAFT,
        invoice=invoice,
    )
    payloads = pydantic_data_converter.payload_converter.to_payloads([view, invoice])
    decoded = pydantic_data_converter.payload_converter.from_payloads(
        payloads, [PeriodView, Invoice]
    )
    assert decoded == [view, invoice]  # the same values come back
    return [payload.data.decode() for payload in payloads]


def cli_json(invoice: Invoice, capsys: pytest.CaptureFixture[str]) -> str:
    print_json(invoice)
    return capsys.readouterr().out


async def test_real_invoices_and_webhooks_have_no_exponent_and_no_negative_zero(
    engine: sqlalchemy.Engine,
    sink: WebhookSink,
    http: httpx.AsyncClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    load_catalog(
        engine,
        decimals_catalog([{"code": "local-sink", "url": sink.url, "secret": SECRET}]),
    )
    receipt = record_usage(
        engine,
        COUPON_SPLIT,
        JANUARY,
        FEBRUARY,
        [
            usage(COUPON_SPLIT, "big", "volume", gb=1e16),  # JSON's 1e16: units 1E+16
            usage(COUPON_SPLIT, "tiny", "micro", n="1E-7"),  # a fee of 0.0000000000001
        ],
    )
    assert receipt.accepted == 2
    assert (
        record_usage(
            engine, TAXED, JANUARY, FEBRUARY, [usage(TAXED, "tiny", "micro", n="0.0000001")]
        ).accepted
        == 1
    )

    delivery_ids: list[str] = []
    invoices: dict[str, Invoice] = {}
    for subscription in (COUPON_SPLIT, TAXED):
        drafted = draft_invoice(engine, subscription, JANUARY, FEBRUARY)
        delivery_ids += drafted.delivery_ids
        if subscription == TAXED:  # 0.004 agreed for the volume: 0 cents, taxed at 20%
            adjust_fee(
                engine,
                drafted.invoice.id,
                AdjustedFee(
                    charge_code="volume",
                    mode=AdjustmentMode.AMOUNT,
                    units=Decimal(1),
                    unit_amount=Decimal("0.004"),
                ),
            )
        outcome = finalize_invoice(engine, drafted.invoice.id, FEBRUARY)
        delivery_ids += outcome.delivery_ids
        invoices[subscription] = get_invoice(engine, drafted.invoice.id)  # as stored
    assert len(delivery_ids) == 4  # invoice.drafted and invoice.created, twice

    # The totals to the cent.
    split, taxed = invoices[COUPON_SPLIT], invoices[TAXED]
    assert (split.fees_amount_cents, split.coupons_amount_cents, split.taxes_amount_cents) == (
        10**16 + 1000,
        1000,
        0,
    )
    assert split.total_amount_cents == 10**16
    assert [fee.precise_taxes_amount for fee in split.fees] == [0, 0, 0]
    assert (taxed.fees_amount_cents, taxed.taxes_amount_cents, taxed.total_amount_cents) == (
        1000,
        200,
        1200,
    )
    assert {fee.code: fee.amount_cents for fee in taxed.fees} == {
        "subscription": 1000,
        "volume": 0,
        "micro": 0,
    }

    activities = WebhookActivities(engine, http)
    for delivery_id in delivery_ids:
        await deliver(activities, delivery_id)
    assert len(sink.received) == 4
    for received in sink.received:
        assert received.verified is True
        assert unreadable_numbers(received.body) == [], received.body

    for invoice in invoices.values():
        texts = [invoice.model_dump_json(), cli_json(invoice, capsys), *payload_texts(invoice)]
        for text in texts:
            assert unreadable_numbers(text) == [], text
        table = table_text(invoice)
        assert not NEGATIVE_ZERO_IN_TEXT.search(table), table
        assert "prepaid credits" in table
    written = {fee["code"]: fee for fee in json.loads(split.model_dump_json())["fees"]}
    assert written["volume"]["units"] == "10000000000000000"
    assert written["micro"]["precise_amount"] == "0.0000000000001"
    assert "-10.00 USD" in table_text(split)  # the coupon: a real discount keeps its sign


@settings(deadline=None)  # a shared, loaded machine: no per-example deadline
@given(awkward_fee_values)
def test_every_writer_of_an_invoice_writes_fixed_point(fee_values: list[FeeValues]) -> None:
    invoice = awkward_invoice(fee_values)
    texts = [webhook_body("invoice.created", invoice), *payload_texts(invoice)]
    for text in texts:
        assert unreadable_numbers(text) == [], text
    table = table_text(invoice)
    assert not NEGATIVE_ZERO_IN_TEXT.search(table), table


def test_cli_json_writes_bare_decimals_fixed_point(capsys: pytest.CaptureFixture[str]) -> None:
    print_json({"amount": Decimal("0E-25"), "units": [Decimal("1E+3"), Decimal("-0.00")]})
    out = capsys.readouterr().out
    assert json.loads(out) == {"amount": "0", "units": ["1000", "0"]}
