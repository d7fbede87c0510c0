"""Operator control of the grace period through the real CLI: a held invoice, its
preview, its approval, its timeline and who did what (``--requested-by``), and clear
errors for what cannot be done. The approval rules are those of
``examples/approvals.yaml``, loaded on top of the example catalog."""

from __future__ import annotations

import asyncio
import getpass
from datetime import date
from typing import Any

import pytest
import pytest_asyncio

from billing.models import Invoice, InvoicePreview
from billing.periods import period_workflow_id
from services.catalog import get_billing_context
from services.finalization import preview_invoice
from starter.client import BillingClient
from starter.errors import (
    InvalidRequest,
    InvoiceFinalized,
    NoBillingPeriod,
    Refused,
    UnknownSubscription,
)
from tests.e2e.conftest import ROOT, Stack
from workflows.billing_period import BillingPeriodWorkflow

pytestmark = pytest.mark.e2e

HELD = "sub_harbor_team"  # its customer's rule: every invoice needs approval
PLAIN = "sub_meridian_growth"  # its billing entity's rules do not match a first invoice
START = "2026-01-01"
TOTALS = (
    "fees_amount_cents",
    "coupons_amount_cents",
    "taxes_amount_cents",
    "sub_total_excluding_taxes_amount_cents",
    "sub_total_including_taxes_amount_cents",
    "prepaid_credit_amount_cents",
    "total_amount_cents",
)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def approvals(stack: Stack) -> Stack:
    """The stack with ``examples/approvals.yaml`` loaded on top of the example catalog."""
    await stack.ok("catalog", "load", str(ROOT / "examples" / "approvals.yaml"))
    return stack


async def test_a_held_invoice_is_previewed_approved_and_its_timeline_names_everyone(
    approvals: Stack,
) -> None:
    stack, period = approvals, ("--period-start", START)
    await stack.ok("period", "start", HELD, *period, "--grace-seconds", "3600")
    await _invoice(stack, HELD, lambda inv: inv["status"] == "draft")
    sent = await stack.ok(
        "usage", "send", "--subscription", HELD, "--code", "reserved_instances",
        "--timestamp", "2026-01-10T12:00:00Z", "--property", "instances=5",
        "--requested-by", "ingest-bot", "--json",
    )  # fmt: skip
    assert sent.json()["accepted"] == 1
    draft = await _invoice(
        stack, HELD, lambda inv: (_fee(inv, "reserved_instances") or {}).get("events_count") == 1
    )
    assert draft["expected_finalization_at"] is not None

    # Finalize: the rule matches, so the invoice is held, still a draft.
    held = (
        await stack.ok("invoice", "finalize", HELD, *period, "--requested-by", "bob", "--json")
    ).json()
    assert held["status"] == "draft" and held["number"].endswith("-DRAFT")
    assert held["approval"]["status"] == "required"
    assert held["approval"]["reasons"] == ["every invoice needs approval"]
    # Held is still a draft: a fee edit (by whoever runs the CLI) and a refresh apply.
    edited, refreshed = await asyncio.gather(
        stack.ok("fee", "edit", HELD, *period, "--charge", "seats", "--units", "3", "--json"),
        stack.ok("invoice", "refresh", HELD, *period, "--requested-by", "carol", "--json"),
    )
    assert edited.json()["status"] == refreshed.json()["status"] == "draft"
    # Independent reads go together (each CLI run costs its interpreter's start).
    shown, table, previewed = await asyncio.gather(
        stack.ok("invoice", "show", HELD, *period, "--json"),
        stack.ok("invoice", "show", HELD, *period),
        stack.ok("invoice", "preview", HELD, *period, "--json"),
    )
    assert shown.json()["approval"] == held["approval"]
    assert "awaiting_approval" in table.stdout
    assert "approval: required" in table.stdout and "every invoice needs approval" in table.stdout
    assert f"billing invoice approve {HELD} --period-start {START}" in table.stdout
    preview = previewed.json()
    assert (preview["preview"], preview["number"], preview["status"]) == (True, None, "finalized")
    assert preview["id"] == held["id"] and preview["approval"]["status"] == "required"
    assert preview["total_amount_cents"] > 0

    final = (
        await stack.ok(
            "invoice", "approve", HELD, *period,
            "--note", "checked with the account manager", "--requested-by", "alice", "--json",
        )
    ).json()  # fmt: skip
    assert final["status"] == "finalized" and final["number"].startswith("ACMEENT-")
    approval = final["approval"]
    assert (approval["status"], approval["approved_by"]) == ("approved", "alice")
    assert approval["note"] == "checked with the account manager"
    assert approval["approved_at"] is not None and final["expected_finalization_at"] is None
    # The preview said what finalization would give, to the cent.
    assert {key: final[key] for key in TOTALS} == {key: preview[key] for key in TOTALS}
    assert [f["amount_cents"] for f in final["fees"]] == [
        f["amount_cents"] for f in preview["fees"]
    ]

    timeline_json, listed, again = await asyncio.gather(
        stack.ok("invoice", "timeline", HELD, *period, "--json"),
        stack.ok("invoice", "timeline", HELD, *period),
        stack.billing("invoice", "approve", HELD, *period),
    )
    timeline = timeline_json.json()
    assert timeline["invoice_id"] == final["id"]
    entries = timeline["entries"]
    assert all(set(e) == {"at", "kind", "actor", "summary", "total_amount_cents"} for e in entries)
    kinds = [e["kind"] for e in entries]
    steps = ["draft_created", "usage_recorded", "approval_required", "approved", "finalized"]
    assert [k for k in kinds if k in steps] == steps, kinds
    actors = {e["kind"]: e["actor"] for e in entries}
    assert actors["draft_created"] == "system" and actors["usage_recorded"] == "ingest-bot"
    assert actors["approval_required"] == "bob"
    assert actors["fee_adjusted"] == _os_user()  # --requested-by defaults to the OS user
    assert kinds.index("approval_required") < kinds.index("fee_adjusted") < kinds.index("approved")
    assert actors["approved"] == actors["finalized"] == "alice"
    finalized = next(e for e in entries if e["kind"] == "finalized")
    assert finalized["total_amount_cents"] == final["total_amount_cents"]
    for text in ("approval_required", "ingest-bot", "bob", "alice", final["number"]):
        assert text in listed.stdout
    # Nothing is left to approve: it says so and names the invoice.
    assert again.code == 1 and "nothing to approve" in again.stderr
    assert final["number"] in again.stderr


async def test_approving_what_needs_no_approval_and_refusals(approvals: Stack) -> None:
    stack, period = approvals, ("--period-start", START)
    # The January period, and the open one containing now (no draft yet); started in
    # process: `period start` has its own tests, and each CLI run costs seconds.
    billing = BillingClient(stack.client, stack.engine, task_queue=stack.task_queue)
    await billing.start_period(PLAIN, date(2026, 1, 1), grace_period_seconds=3600)
    await billing.start_period(PLAIN)
    await _invoice(stack, PLAIN, lambda inv: inv["status"] == "draft")
    # BILLING_ACTOR names whoever runs the CLI when --requested-by is not given.
    final = (
        await stack.ok("invoice", "approve", PLAIN, *period, "--json", env={"BILLING_ACTOR": "ops"})
    ).json()
    assert final["status"] == "finalized" and final["approval"]["status"] == "not_required"

    # Bad requests: exit 2 for what can never succeed as given, 1 for what is refused.
    refusals: list[tuple[tuple[str, ...], int, str]] = [
        (("invoice", "approve", "sub_nope", *period), 1, "unknown subscription 'sub_nope'"),
        (("invoice", "preview", PLAIN, "--period-start", "2026-01-15"), 2, "first day"),
        (("invoice", "approve", PLAIN, "--period-start", "2026-02-01"), 1, "never started"),
        (("invoice", "approve", PLAIN, *period, "--note", ""), 2, "note"),
        (("invoice", "approve", PLAIN, *period, "--requested-by", " "), 2, "--requested-by"),
        (("invoice", "approve", PLAIN), 1, "no draft invoice to approve yet"),  # the open period
    ]  # fmt: skip
    timeline, *results = await asyncio.gather(
        stack.ok("invoice", "timeline", PLAIN, *period, "--json"),
        *(stack.billing(*args) for args, _, _ in refusals),
    )
    entries = timeline.json()["entries"]
    assert [e["actor"] for e in entries if e["kind"] == "finalized"] == ["ops"]
    assert "approved" not in [e["kind"] for e in entries]
    for (args, code, text), result in zip(refusals, results, strict=True):
        assert (result.code, text in result.stderr) == (code, True), (args, result.stderr)
        assert "Traceback" not in result.stderr


async def test_the_clients_reads_and_refusals(approvals: Stack) -> None:
    """The same errors through BillingClient in process (no interpreter start per check)."""
    stack = approvals
    billing = BillingClient(stack.client, stack.engine, task_queue=stack.task_queue)
    offline = BillingClient(None, stack.engine, task_queue=stack.task_queue)
    await billing.start_period(PLAIN, date(2026, 3, 1), grace_period_seconds=3600)
    await billing.start_period(PLAIN)  # the open period containing now
    march = await _draft(billing, PLAIN, date(2026, 3, 1))
    # A coupon given during the grace period only touches the store: the preview has it,
    # as finalization will; the workflow's own preview query has it once refreshed.
    billing.apply_coupon("cust_meridian", "welcome_50", applied_coupon_id="e2e-preview-coupon")
    preview = await billing.preview_invoice(PLAIN, date(2026, 3, 1))
    assert preview.preview is True and preview.number is None and preview.id == march.id
    assert preview.coupons_amount_cents == 5000
    assert await billing.refresh_customer_drafts("cust_meridian", requested_by="erin") == 1
    assert (await _queried_preview(stack, PLAIN, march)).coupons_amount_cents == 5000
    # The CLI's top-up refreshes the running drafts itself.
    topped = await stack.ok("wallet", "top-up", "cust_meridian", "--amount-cents", "700")
    assert "1 running draft(s) refreshed" in topped.stdout
    assert (await _queried_preview(stack, PLAIN, march)).prepaid_credit_amount_cents == 700
    preview = await billing.preview_invoice(PLAIN, date(2026, 3, 1))
    final = await billing.approve_invoice(PLAIN, date(2026, 3, 1), requested_by="carol")
    assert final.approval is not None and final.approval.status == "not_required"
    assert (final.coupons_amount_cents, final.total_amount_cents) == (
        preview.coupons_amount_cents,
        preview.total_amount_cents,
    )
    # The timeline comes from the store: no Temporal connection needed.
    timeline = await offline.invoice_timeline(PLAIN, date(2026, 3, 1))
    assert timeline.invoice_id == final.id and timeline.entries[-1].kind in (
        "finalized",
        "webhook_delivered",
    )
    assert any(e.kind == "finalized" and e.actor == "carol" for e in timeline.entries)

    with pytest.raises(InvoiceFinalized, match="nothing to preview"):
        await billing.preview_invoice(PLAIN, date(2026, 3, 1))
    with pytest.raises(InvoiceFinalized, match="nothing to approve"):
        await billing.approve_invoice(PLAIN, date(2026, 3, 1))
    for read in (billing.preview_invoice, offline.invoice_timeline):
        with pytest.raises(UnknownSubscription):
            await read("sub_nope", None)
        with pytest.raises(NoBillingPeriod):
            await read(PLAIN, date(2026, 4, 1))
        with pytest.raises(Refused, match="open until"):
            await read(PLAIN, None)
        with pytest.raises(InvalidRequest, match="first day"):
            await read(PLAIN, date(2026, 4, 2))
    with pytest.raises(Refused, match="no draft invoice"):
        await billing.approve_invoice(PLAIN)
    for bad in ("", "x" * 201):
        with pytest.raises(InvalidRequest, match="requested_by"):
            await billing.refresh_invoice(PLAIN, date(2026, 4, 1), requested_by=bad)
        with pytest.raises(InvalidRequest, match="requested_by"):
            await billing.send_usage([], requested_by=bad)
    with pytest.raises(InvalidRequest, match="note"):
        await billing.approve_invoice(PLAIN, date(2026, 4, 1), note="")


# --------------------------------------------------------------------------- helpers


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name: the CLI sends none and the timeline says system
        return "system"


def _fee(invoice: dict[str, Any], code: str) -> dict[str, Any] | None:
    return next((f for f in invoice["fees"] if f["code"] == code), None)


async def _invoice(stack: Stack, sub: str, predicate: Any, timeout: float = 30) -> dict[str, Any]:
    last: Any = None
    for _ in range(int(timeout / 0.5)):
        result = await stack.billing("invoice", "show", sub, "--period-start", START, "--json")
        if result.code == 0:
            last = result.json()
            if "fees" in last and predicate(last):
                return last  # type: ignore[no-any-return]
        await asyncio.sleep(0.5)
    raise AssertionError(f"invoice of {sub} {START} never matched; last: {last}")


async def _draft(billing: BillingClient, sub: str, start: date) -> Invoice:
    for _ in range(60):
        snapshot = await billing.show_invoice(sub, start)
        if snapshot.invoice is not None:
            return snapshot.invoice
        await asyncio.sleep(0.5)
    raise AssertionError(f"no draft for {sub} {start}")


async def _queried_preview(stack: Stack, subscription: str, draft: Invoice) -> InvoicePreview:
    """The running period's ``preview`` query, once a refresh sent just now changed it."""
    timezone = get_billing_context(stack.engine, subscription).timezone
    handle = stack.client.get_workflow_handle_for(
        BillingPeriodWorkflow.run, period_workflow_id(subscription, draft.period_start, timezone)
    )
    expected = await asyncio.to_thread(preview_invoice, stack.engine, draft.id)
    for _ in range(200):
        queried = await handle.query(BillingPeriodWorkflow.preview)
        if queried is not None and queried.total_amount_cents == expected.total_amount_cents:
            return queried
        await asyncio.sleep(0.1)
    raise AssertionError(f"the preview query never showed {expected.total_amount_cents}")
