"""The real CLI on invoices with hard decimals: no exponent in any ``--json``, no ``-0.00``.

The invoice JSON passes through the workflow (query and update results, the pydantic
payload converter), the database and the webhook outbox before the CLI prints it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Result, Stack, jsonl
from tests.fixtures.decimals import (
    COUPON_SPLIT,
    NEGATIVE_ZERO_IN_TEXT,
    decimals_catalog,
    unreadable_numbers,
)

pytestmark = pytest.mark.e2e

START = "2026-01-01"


def event(code: str, **properties: Any) -> dict[str, Any]:
    return {
        "transaction_id": f"e2e-dec-{uuid.uuid4()}",
        "external_subscription_id": COUPON_SPLIT,
        "code": code,
        "timestamp": "2026-01-10T12:00:00Z",
        "properties": properties,
    }


def readable(result: Result) -> Any:
    assert unreadable_numbers(result.stdout) == [], result.stdout
    return result.json()


async def test_invoice_json_and_table_of_the_cli(stack: Stack, tmp_path: Path) -> None:
    catalog = tmp_path / "decimals.json"  # JSON is YAML
    catalog.write_text(json.dumps(decimals_catalog()))
    await stack.ok("catalog", "load", str(catalog))
    await stack.ok(
        "period", "start", COUPON_SPLIT, "--period-start", START, "--grace-seconds", "3600"
    )
    # JSON numbers as a sender writes them: 1e+16 GB, and 1E-7 as a string.
    events = [event("volume", gb=1e16), event("micro", n="1E-7")]
    assert "1e+16" in jsonl(events)
    sent = readable(await stack.ok("usage", "send", "--file", "-", "--json", stdin=jsonl(events)))
    assert sent["accepted"] == 2

    draft: dict[str, Any] = {}
    for _ in range(60):  # the query result, once the refresh has seen both events
        shown = await stack.ok("invoice", "show", COUPON_SPLIT, "--period-start", START, "--json")
        draft = readable(shown)
        if len(draft.get("fees", [])) == 3:
            break
        await asyncio.sleep(0.5)
    fees = {fee["code"]: fee for fee in draft["fees"]}
    assert fees["volume"]["units"] == "10000000000000000"
    assert fees["micro"]["precise_amount"] == "0.0000000000001"

    edited = await stack.ok(
        "fee", "edit", COUPON_SPLIT, "--period-start", START,
        "--charge", "micro", "--amount", "0.00000004", "--json",
    )  # fmt: skip
    micro = next(fee for fee in readable(edited)["fees"] if fee["code"] == "micro")
    assert (micro["unit_amount"], micro["amount_cents"]) == ("0.00000004", 0)

    final = readable(
        await stack.ok("invoice", "finalize", COUPON_SPLIT, "--period-start", START, "--json")
    )
    assert final["status"] == "finalized"
    assert (final["fees_amount_cents"], final["coupons_amount_cents"]) == (10**16 + 1000, 1000)
    assert (final["taxes_amount_cents"], final["total_amount_cents"]) == (0, 10**16)
    assert {fee["precise_taxes_amount"] for fee in final["fees"]} == {"0"}

    table = await stack.ok("invoice", "show", COUPON_SPLIT, "--period-start", START)
    assert not NEGATIVE_ZERO_IN_TEXT.search(table.stdout), table.stdout
    assert "-10.00 USD" in table.stdout  # the coupon
    assert "100,000,000,000,000.00 USD" in table.stdout  # the total
    listed = await stack.ok("invoice", "list", "--subscription", COUPON_SPLIT)
    assert not NEGATIVE_ZERO_IN_TEXT.search(listed.stdout), listed.stdout
    [stored] = readable(await stack.ok("invoice", "list", "--subscription", COUPON_SPLIT, "--json"))
    assert stored["total_amount_cents"] == 10**16

    deliveries: list[dict[str, Any]] = []
    for _ in range(60):  # invoice.drafted and invoice.created, with their bodies
        listing = await stack.ok("webhook", "list", "--invoice", final["id"], "--json")
        deliveries = readable(listing)
        if len(deliveries) == 2 and all(d["status"] == "succeeded" for d in deliveries):
            break
        await asyncio.sleep(0.5)
    assert sorted(d["webhook_type"] for d in deliveries) == ["invoice.created", "invoice.drafted"]
    received = [r for r in stack.sink.received if r.webhook_id in {d["id"] for d in deliveries}]
    assert len(received) == 2
    for webhook in received:
        assert webhook.verified is True
        assert unreadable_numbers(webhook.body) == [], webhook.body
