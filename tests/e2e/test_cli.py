"""The ``billing`` CLI end to end: every command, its JSON, its errors and exit codes."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus

from tests.e2e.conftest import Stack, jsonl
from workflows.launch_periods import LaunchPeriodsResult

pytestmark = pytest.mark.e2e


def tid() -> str:
    return f"e2e-{uuid.uuid4()}"


def event(sub: str, code: str, timestamp: str, **properties: Any) -> dict[str, Any]:
    return {
        "transaction_id": tid(),
        "external_subscription_id": sub,
        "code": code,
        "timestamp": timestamp,
        "properties": properties,
    }


async def test_schema_lists_every_payload(stack: Stack) -> None:
    schemas = (await stack.ok("schema")).json()
    for name in (
        "AddUsage",
        "EditFee",
        "RemoveFeeAdjustment",
        "RefreshInvoice",
        "FinalizeInvoice",
        "ApproveInvoice",
        "RecomputeGracePeriod",
        "InvoicePreview",
        "BillingPeriodInput",
    ):
        assert schemas[name]["type"] == "object", name
    assert "charge_code" in schemas["EditFee"]["properties"]
    for name in ("AddUsage", "EditFee", "RemoveFeeAdjustment", "RefreshInvoice", "ApproveInvoice"):
        assert "requested_by" in schemas[name]["properties"], name
    assert "note" in schemas["ApproveInvoice"]["properties"]


async def test_bad_flags_exit_2(stack: Stack) -> None:
    assert (await stack.billing("period", "start-all")).code == 2  # --period-end missing
    assert (await stack.billing("period", "start", "sub_x", "--period-start", "nope")).code == 2
    result = await stack.billing("fee", "edit", "sub_brandt_team", "--charge", "seats")
    assert result.code == 2
    assert "--units" in result.stderr
    result = await stack.billing("usage", "send", "--code", "api_calls")
    assert result.code == 2
    assert "--subscription" in result.stderr
    result = await stack.billing(
        "period", "start", "sub_brandt_team", "--period-start", "2026-01-15"
    )
    assert result.code == 2
    assert "first day" in result.stderr


async def test_unknown_subscription(stack: Stack) -> None:
    result = await stack.billing("period", "start", "sub_nope")
    assert result.code == 1
    assert "unknown subscription 'sub_nope'" in result.stderr
    result = await stack.billing(
        "usage", "send", "--subscription", "sub_nope", "--code", "api_calls", "--json"
    )
    assert result.code == 1
    report = result.json()
    assert report["accepted"] == 0
    assert "unknown subscription" in report["rejected"][0]["reason"]


async def test_draft_edit_refresh_finalize_and_webhook(stack: Stack) -> None:
    sub, start = "sub_northwind_growth", "2026-01-01"
    launched = (
        await stack.ok(
            "period", "start", sub, "--period-start", start, "--grace-seconds", "3600", "--json"
        )
    ).json()
    assert launched["status"] == "started"
    assert launched["workflow_id"] == f"billing-period/{sub}/{start}"
    again = (await stack.ok("period", "start", sub, "--period-start", start, "--json")).json()
    assert again["status"] == "already_running"

    events = [event(sub, "active_users", "2026-01-10T12:00:00Z", user_id=f"u{i}") for i in range(3)]
    events.append(event(sub, "no_such_metric", "2026-01-10T12:00:00Z"))
    report = await stack.billing("usage", "send", "--file", "-", "--json", stdin=jsonl(events))
    assert report.code == 1  # one rejected
    body = report.json()
    assert body["accepted"] == 3
    assert len(body["rejected"]) == 1 and body["rejected"][0]["code"] == "no_such_metric"
    dup = await stack.billing("usage", "send", "--file", "-", "--json", stdin=jsonl(events[:1]))
    assert dup.json()["duplicates"] == 1

    shown = await _wait_invoice(
        stack, sub, start, lambda inv: _fee(inv, "active_users") is not None
    )
    assert shown["status"] == "draft"
    assert shown["number"].endswith("-DRAFT")
    assert _fee(shown, "active_users")["units"] in ("3", "3.0")

    edited = (
        await stack.ok(
            "fee",
            "edit",
            sub,
            "--period-start",
            start,
            "--charge",
            "active_users",
            "--units",
            "10",
            "--json",
        )
    ).json()
    assert _fee(edited, "active_users")["adjusted"] is True
    assert _fee(edited, "active_users")["amount_cents"] == 2000  # 10 x 2.00 (volume tier 1)
    renamed = (
        await stack.ok(
            "fee",
            "edit",
            sub,
            "--period-start",
            start,
            "--charge",
            "peak_storage_gb",
            "--amount",
            "12.5",
            "--display-name",
            "Storage (agreed)",
            "--json",
        )
    ).json()
    assert _fee(renamed, "peak_storage_gb")["amount_cents"] == 1250
    assert _fee(renamed, "peak_storage_gb")["display_name"] == "Storage (agreed)"
    restored = (
        await stack.ok(
            "fee",
            "edit",
            sub,
            "--period-start",
            start,
            "--charge",
            "active_users",
            "--remove",
            "--json",
        )
    ).json()
    assert _fee(restored, "active_users")["adjusted"] is False
    refreshed = (
        await stack.ok("invoice", "refresh", sub, "--period-start", start, "--json")
    ).json()
    assert refreshed["status"] == "draft"
    unknown = await stack.billing(
        "fee", "edit", sub, "--period-start", start, "--charge", "nope", "--units", "1"
    )
    assert unknown.code == 1 and "not part of this subscription's plan" in unknown.stderr

    table = await stack.ok("invoice", "show", sub, "--period-start", start)
    assert "draft" in table.stdout and "Monthly active users" in table.stdout

    final = (await stack.ok("invoice", "finalize", sub, "--period-start", start, "--json")).json()
    assert final["status"] == "finalized"
    assert not final["number"].endswith("DRAFT")
    assert final["coupons_amount_cents"] > 0  # welcome_50 from the catalog

    # Finalized: every change is refused with the invoice's number.
    refused = await stack.billing(
        "fee", "edit", sub, "--period-start", start, "--charge", "active_users", "--units", "1"
    )
    assert refused.code == 1
    assert final["number"] in refused.stderr and "finalized" in refused.stderr
    late = await stack.billing(
        "usage",
        "send",
        "--subscription",
        sub,
        "--code",
        "active_users",
        "--timestamp",
        "2026-01-20T00:00:00Z",
        "--property",
        "user_id=late",
        "--json",
    )
    assert late.code == 1
    assert f"invoice {final['number']} is finalized" in late.json()["rejected"][0]["reason"]

    # The invoice.created webhook arrives, signed, and the delivery log says so.
    deliveries = await _wait_deliveries(stack, final["id"], "succeeded")
    created = [d for d in deliveries if d["webhook_type"] == "invoice.created"]
    assert created and created[0]["attempts"] >= 1
    received = [w for w in stack.sink.received if w.webhook_id == created[0]["id"]]
    assert received and received[0].verified is True
    assert json.loads(received[0].body)["invoice"]["number"] == final["number"]
    listed = await stack.ok("webhook", "list")
    assert created[0]["id"] in listed.stdout
    retried = (await stack.ok("webhook", "retry", created[0]["id"], "--json")).json()
    assert retried["status"] == "succeeded"
    missing = await stack.billing("webhook", "retry", "dlv_nope")
    assert missing.code == 1 and "webhook list" in missing.stderr

    stored = (await stack.ok("invoice", "list", "--subscription", sub, "--json")).json()
    assert [inv["number"] for inv in stored] == [final["number"]]
    assert set(stored[0]) >= {
        "id",
        "number",
        "status",
        "currency",
        "customer_external_id",
        "subscription_external_id",
        "period_start",
        "period_end",
        "fees_amount_cents",
        "coupons_amount_cents",
        "taxes_amount_cents",
        "prepaid_credit_amount_cents",
        "total_amount_cents",
        "fees",
    }
    table = await stack.ok("invoice", "list", "--status", "finalized")
    assert final["number"] in table.stdout


async def test_empty_invoice_closed_under_skip(stack: Stack) -> None:
    sub, start = "sub_koala_payg", "2026-01-01"
    await stack.ok("period", "start", sub, "--period-start", start, "--grace-seconds", "3600")
    await _wait_invoice(stack, sub, start, lambda inv: inv["status"] == "draft")
    closed = (await stack.ok("invoice", "finalize", sub, "--period-start", start, "--json")).json()
    assert closed["status"] == "closed"
    assert not re.search(r"-\d{6}$", closed["number"])  # no number for a closed invoice
    assert (await stack.ok("period", "start", sub, "--period-start", start, "--json")).json()[
        "status"
    ] == "finalized"


async def test_malformed_jsonl_lines_are_reported_and_others_sent(
    stack: Stack, tmp_path: Any
) -> None:
    sub = "sub_brandt_payg"
    good = [event(sub, "api_calls", "2026-02-03T10:00:00Z") for _ in range(2)]
    lines = (
        jsonl(good[:1]) + "{not json\n" + json.dumps({"code": "api_calls"}) + "\n" + jsonl(good[1:])
    )
    path = tmp_path / "events.jsonl"
    path.write_text(lines)
    result = await stack.billing("usage", "send", "--file", str(path), "--json")
    assert result.code == 1
    body = result.json()
    assert body["accepted"] == 2
    assert [m.split(":")[0] for m in body["malformed"]] == ["line 2", "line 3"]
    human = await stack.billing("usage", "send", "--file", str(path))
    assert "line 2" in human.stderr and "2 duplicate" in human.stdout
    missing = await stack.billing("usage", "send", "--file", str(tmp_path / "nope.jsonl"))
    assert missing.code == 2


async def test_usage_file_is_sent_in_batches(stack: Stack) -> None:
    sub = "sub_atlantico_marketplace"  # Europe/Lisbon
    events = [
        event(sub, "payment_volume", f"2026-07-{1 + i % 28:02d}T12:00:00Z", amount=10)
        for i in range(2300)
    ]
    report = (
        await stack.ok(
            "usage", "send", "--file", "-", "--grace-seconds", "3600", "--json", stdin=jsonl(events)
        )
    ).json()
    assert report["accepted"] == 2300 and report["rejected"] == []
    assert [p["workflow_id"] for p in report["periods"]] == [f"billing-period/{sub}/2026-07-01"]
    draft = await _wait_invoice(
        stack,
        sub,
        "2026-07-01",
        lambda inv: (_fee(inv, "payment_volume") or {}).get("events_count") == 2300,
    )
    assert _fee(draft, "payment_volume")["units"] in ("23000", "23000.0")


async def test_routing_across_boundaries_and_timezones(stack: Stack) -> None:
    # Tokyo (UTC+9): 14:30Z on Feb 28 is 23:30 local (February), 15:30Z is 00:30 on March 1.
    tokyo = "sub_sakura_starter"
    # Los Angeles (UTC-7 in spring): 06:30Z on May 1 is still April 30, 07:30Z is May 1.
    la = "sub_goldengate_growth"
    events = [
        event(tokyo, "api_calls", "2026-02-28T14:30:00Z"),
        event(tokyo, "api_calls", "2026-02-28T15:30:00Z"),
        event(la, "api_calls", "2026-05-01T06:30:00Z"),
        event(la, "api_calls", "2026-05-01T07:30:00Z"),
    ]
    report = (
        await stack.ok(
            "usage", "send", "--file", "-", "--grace-seconds", "3600", "--json", stdin=jsonl(events)
        )
    ).json()
    assert report["accepted"] == 4 and report["rejected"] == []
    by_workflow = {p["workflow_id"]: p["accepted"] for p in report["periods"]}
    assert by_workflow == {
        f"billing-period/{tokyo}/2026-02-01": 1,
        f"billing-period/{tokyo}/2026-03-01": 1,
        f"billing-period/{la}/2026-04-01": 1,
        f"billing-period/{la}/2026-05-01": 1,
    }
    feb = await _wait_invoice(
        stack, tokyo, "2026-02-01", lambda inv: _fee(inv, "api_calls") is not None
    )
    assert _fee(feb, "api_calls")["events_count"] == 1
    for workflow_id in by_workflow:
        description = await stack.client.get_workflow_handle(workflow_id).describe()
        assert description.status == WorkflowExecutionStatus.RUNNING


async def test_start_all_is_idempotent(stack: Stack) -> None:
    first = await stack.ok(
        "period", "start-all", "--period-end", "2026-06-30", "--grace-seconds", "3600", "--json"
    )
    summary = first.json()
    statuses = {o["subscription_external_id"]: o["status"] for o in summary["outcomes"]}
    assert len(statuses) == 8
    assert set(statuses.values()) == {"started"}
    human = await stack.ok("period", "start-all", "--period-end", "2026-06-30")
    assert "0 started, 8 already running" in human.stdout
    assert "launching periods" in human.stderr  # the progress bar
    again = (
        await stack.ok(
            "period", "start-all", "--period-end", "2026-06-30", "--concurrency", "2", "--json"
        )
    ).json()
    assert {o["status"] for o in again["outcomes"]} == {"already_running"}
    none = (await stack.ok("period", "start-all", "--period-end", "2026-06-15", "--json")).json()
    assert none["outcomes"] == []


async def test_coupon_and_wallet(stack: Stack) -> None:
    applied = (await stack.ok("coupon", "apply", "cust_atlantico", "partner_5", "--json")).json()
    assert (
        applied["coupon_code"] == "partner_5"
        and applied["customer_external_id"] == "cust_atlantico"
    )
    again = (await stack.ok("coupon", "apply", "cust_atlantico", "partner_5", "--json")).json()
    assert again["id"] == applied["id"]
    bad = await stack.billing("coupon", "apply", "cust_atlantico", "nope")
    assert bad.code == 1 and "nope" in bad.stderr
    wallet = (
        await stack.ok(
            "wallet",
            "top-up",
            "cust_goldengate",
            "--amount-cents",
            "1500",
            "--transaction-id",
            "t1",
            "--json",
        )
    ).json()
    assert wallet["balance_cents"] == 1500
    wallet = (
        await stack.ok(
            "wallet",
            "top-up",
            "cust_goldengate",
            "--amount-cents",
            "1500",
            "--transaction-id",
            "t1",
            "--json",
        )
    ).json()
    assert wallet["balance_cents"] == 1500  # idempotent
    unknown = await stack.billing("wallet", "top-up", "cust_nope", "--amount-cents", "1")
    assert unknown.code == 1


async def test_schedule_launches_last_months_periods(stack: Stack) -> None:
    schedule_id = f"e2e-{uuid.uuid4().hex[:8]}"
    created = await stack.ok("schedule", "create", "--id", schedule_id, "--grace-seconds", "3600")
    assert "created" in created.stdout
    assert "updated" in (await stack.ok("schedule", "create", "--id", schedule_id)).stdout
    for _ in range(50):  # the schedule list is eventually consistent
        listed = (await stack.ok("schedule", "list", "--json")).json()
        if any(s["id"] == schedule_id for s in listed):
            break
        await asyncio.sleep(0.2)
    assert any(s["id"] == schedule_id and s["cron"] == ["0 1 1 * *"] for s in listed), listed
    handle = stack.client.get_schedule_handle(schedule_id)
    await handle.trigger()
    launch_result = None
    for _ in range(100):
        description = await handle.describe()
        if description.info.recent_actions:
            action = description.info.recent_actions[-1].action
            launch = stack.client.get_workflow_handle(
                action.workflow_id,
                run_id=action.first_execution_run_id,
                result_type=LaunchPeriodsResult,
            )
            launch_result = await launch.result()
            break
        await asyncio.sleep(0.2)
    assert launch_result is not None
    end = launch_result.period_end_date
    start = end.replace(day=1).isoformat()
    launched = set(launch_result.started) | set(launch_result.already_running)
    assert f"billing-period/sub_brandt_team/{start}" in launched
    described = await stack.client.get_workflow_handle(
        f"billing-period/sub_brandt_team/{start}"
    ).describe()
    assert described.status == WorkflowExecutionStatus.RUNNING
    deleted = await stack.ok("schedule", "delete", schedule_id)
    assert "deleted" in deleted.stdout
    gone = await stack.billing("schedule", "delete", schedule_id)
    assert gone.code == 1 and "schedule list" in gone.stderr


# --------------------------------------------------------------------------- helpers


def _fee(invoice: dict[str, Any], code: str) -> dict[str, Any] | None:
    return next((f for f in invoice["fees"] if f["code"] == code), None)


async def _wait_invoice(
    stack: Stack, sub: str, start: str, predicate: Any, timeout: float = 30
) -> dict[str, Any]:
    last: Any = None
    for _ in range(int(timeout / 0.5)):
        result = await stack.billing("invoice", "show", sub, "--period-start", start, "--json")
        if result.code == 0:
            last = result.json()
            if "fees" in last and predicate(last):
                return last  # type: ignore[no-any-return]
        await asyncio.sleep(0.5)
    raise AssertionError(f"invoice of {sub} {start} never matched; last: {last}")


async def _wait_deliveries(stack: Stack, invoice_id: str, status: str) -> list[dict[str, Any]]:
    deliveries: list[dict[str, Any]] = []
    for _ in range(60):
        deliveries = (await stack.ok("webhook", "list", "--invoice", invoice_id, "--json")).json()
        if deliveries and all(d["status"] == status for d in deliveries):
            return deliveries
        await asyncio.sleep(0.5)
    raise AssertionError(f"deliveries never all {status}: {deliveries}")
