"""Operator control of the grace period, through the workflow: approval holds (approve,
auto-approve, edits while held), the ``preview`` query, and grace periods that follow a
changed setting. Time-skipping server, real activities, SQLite and PostgreSQL, a real
webhook receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
import sqlalchemy
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from billing.approval import ApprovalStatus
from billing.models import InvoiceStatus, UsageEvent
from billing.timeline import TimelineKind
from services.catalog import load_catalog
from services.invoices import get_invoice
from services.timeline import invoice_timeline
from tests.fixtures.periods import (
    PeriodHarness,
    period_catalog,
    period_harness,
    workflow_task_failures,
)
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import (
    AddUsage,
    ApproveInvoice,
    EditFee,
    FinalizeInvoice,
    PeriodPhase,
    RecomputeGracePeriod,
)
from workflows.search_attributes import INVOICE_STATUS

HOUR = 3600
FAR_AHEAD = datetime(2099, 1, 1, tzinfo=UTC)


def catalog_with_approval(rules: dict[str, Any] | None) -> Callable[[str, str], dict[str, Any]]:
    """The test catalog with ``rules`` on the billing entity ``acme`` (sub_pro's)."""

    def build(url: str, suffix: str) -> dict[str, Any]:
        catalog = period_catalog(url, suffix)
        if rules is not None:
            catalog["billing_entities"][0]["approval"] = rules
        return catalog

    return build


@pytest_asyncio.fixture
async def held(
    temporal_env: WorkflowEnvironment, engine: sqlalchemy.Engine
) -> AsyncIterator[PeriodHarness]:
    """sub_pro ($100 plan) is held: its billing entity wants approval above $50."""
    catalog = catalog_with_approval({"total_above_cents": 5000})
    async with period_harness(temporal_env, engine, catalog=catalog) as harness:
        yield harness


@pytest_asyncio.fixture
async def auto_approved(
    temporal_env: WorkflowEnvironment, engine: sqlalchemy.Engine
) -> AsyncIterator[PeriodHarness]:
    catalog = catalog_with_approval({"always": True, "auto_approve_after_hours": "2"})
    async with period_harness(temporal_env, engine, catalog=catalog) as harness:
        yield harness


@pytest_asyncio.fixture
async def plain(
    temporal_env: WorkflowEnvironment, engine: sqlalchemy.Engine
) -> AsyncIterator[PeriodHarness]:
    async with period_harness(temporal_env, engine) as harness:
        yield harness


async def webhook_arrives(harness: PeriodHarness, webhook_type: str) -> dict[str, Any]:
    """Wait (real time) until the receiver accepted a webhook of this type; its payload."""
    for _ in range(300):
        for received in harness.sink.accepted:
            payload: dict[str, Any] = received.payload()
            if payload.get("webhook_type") == webhook_type:
                return payload
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {webhook_type} webhook received")


def kinds(harness: PeriodHarness, invoice_id: str) -> list[TimelineKind]:
    return [entry.kind for entry in invoice_timeline(harness.engine, invoice_id)]


async def hold(harness: PeriodHarness) -> WorkflowHandle[Any, Any]:
    """A sub_pro period whose finalization is held for approval."""
    handle = await harness.start("sub_pro", grace_period_seconds=HOUR)
    await harness.wait_for_draft(handle)
    held = await handle.execute_update(
        BillingPeriodWorkflow.finalize_invoice_sync, FinalizeInvoice(requested_by="bob")
    )
    assert held.status == InvoiceStatus.DRAFT
    assert held.approval is not None and held.approval.status == ApprovalStatus.REQUIRED
    assert held.approval.reasons and "5000" in held.approval.reasons[0]
    return handle


async def test_an_invoice_over_its_rule_is_held_edited_then_approved(
    held: PeriodHarness,
) -> None:
    handle = await hold(held)
    view = await held.view(handle)
    assert view.phase == PeriodPhase.AWAITING_APPROVAL
    found = (await handle.describe()).typed_search_attributes
    assert found.get(INVOICE_STATUS) == "awaiting_approval"  # operators list held invoices
    invoice_id = view.invoice.id if view.invoice else ""
    # The approval_required webhook reaches the receiver while the period waits.
    required = await webhook_arrives(held, "invoice.approval_required")
    assert required["invoice"]["approval"]["status"] == "required"
    assert "5000" in required["invoice"]["approval"]["reasons"][0]

    # Held is still a draft: fee edits and late usage apply; finalize-now leaves it held.
    edited = await handle.execute_update(
        BillingPeriodWorkflow.edit_fee_sync,
        EditFee(charge_code="seats", mode="units", units=Decimal(3), requested_by="carol"),
    )
    assert edited.status == InvoiceStatus.DRAFT
    again = await handle.execute_update(
        BillingPeriodWorkflow.finalize_invoice_sync, FinalizeInvoice()
    )
    assert again.status == InvoiceStatus.DRAFT and again.total_amount_cents == 11500

    final = await handle.execute_update(
        BillingPeriodWorkflow.approve_invoice_sync,
        ApproveInvoice(note="checked with the account manager", requested_by="alice"),
    )
    assert final.status == InvoiceStatus.FINALIZED
    assert final.total_amount_cents == 11500  # the edit made while held is billed
    assert final.approval is not None
    assert final.approval.status == ApprovalStatus.APPROVED
    assert final.approval.approved_by == "alice"
    assert final.approval.note == "checked with the account manager"
    assert (await handle.result()).number == final.number

    # The invoice's own changes; webhook deliveries are recorded as they happen.
    timeline = [
        entry
        for entry in invoice_timeline(held.engine, invoice_id)
        if not entry.kind.startswith("webhook_")
    ]
    assert [(e.kind, e.actor) for e in timeline][-4:] == [
        (TimelineKind.APPROVAL_REQUIRED, "bob"),
        (TimelineKind.FEE_ADJUSTED, "carol"),
        (TimelineKind.APPROVED, "alice"),
        (TimelineKind.FINALIZED, "alice"),
    ]
    assert timeline[-1].total_amount_cents == 11500
    await webhook_arrives(held, "invoice.created")
    # Both deliveries (approval_required, created) land in the timeline once delivered.
    for _ in range(300):
        delivered = [
            e for e in invoice_timeline(held.engine, invoice_id) if e.kind.startswith("webhook_")
        ]
        if len(delivered) >= 2:
            break
        await asyncio.sleep(0.1)
    assert [e.kind for e in delivered] == [TimelineKind.WEBHOOK_DELIVERED] * 2
    assert "invoice.approval_required" in delivered[0].summary
    assert "invoice.created" in delivered[1].summary


async def test_a_held_invoice_approves_itself_after_the_rules_hours(
    auto_approved: PeriodHarness,
) -> None:
    handle = await auto_approved.start("sub_pro", grace_period_seconds=0)
    view = await auto_approved.wait_for(handle, lambda v: v.phase == PeriodPhase.AWAITING_APPROVAL)
    assert view.auto_approve_at is not None
    # Held by the draft's own step (a grace period of zero): the held draft's preview shows.
    preview = await handle.query(BillingPeriodWorkflow.preview)
    assert preview is not None and preview.status == InvoiceStatus.FINALIZED
    assert view.invoice is not None
    assert preview.total_amount_cents == view.invoice.total_amount_cents
    final = await handle.result()  # the server skips the two hours
    assert final.status == InvoiceStatus.FINALIZED
    assert final.approval is not None and final.approval.status == ApprovalStatus.APPROVED
    assert final.approval.approved_by == "system"
    assert final.approval.note and "automatically" in final.approval.note
    assert final.approval.approved_at is not None
    assert abs(final.approval.approved_at - view.auto_approve_at) < timedelta(minutes=1)


async def test_approving_a_draft_without_rules_finalizes_it_as_not_required(
    plain: PeriodHarness,
) -> None:
    handle = await plain.start("sub_pro", grace_period_seconds=30 * 24 * HOUR)
    await plain.wait_for_draft(handle)
    final = await handle.execute_update(
        BillingPeriodWorkflow.approve_invoice_sync, ApproveInvoice(requested_by="alice")
    )
    assert final.status == InvoiceStatus.FINALIZED
    assert final.approval is not None and final.approval.status == ApprovalStatus.NOT_REQUIRED
    await handle.result()


async def test_an_approval_sent_with_finalize_now_finalizes_without_a_stop(
    held: PeriodHarness,
) -> None:
    handle = await held.start("sub_pro", grace_period_seconds=30 * 24 * HOUR)
    await held.wait_for_draft(handle)
    # Fire-and-forget, back to back: whichever the workflow sees first, the approval wins.
    await handle.signal(BillingPeriodWorkflow.finalize_invoice, FinalizeInvoice())
    await handle.signal(BillingPeriodWorkflow.approve_invoice, ApproveInvoice(requested_by="dan"))
    final = await handle.result()
    assert final.status == InvoiceStatus.FINALIZED
    assert final.approval is not None and final.approval.approved_by == "dan"
    assert await workflow_task_failures(handle) == []


async def test_the_preview_query_shows_what_finalization_will_make(
    plain: PeriodHarness,
) -> None:
    handle = await plain.start("sub_pro", grace_period_seconds=30 * 24 * HOUR)
    view = await plain.wait_for_draft(handle)
    preview = await handle.query(BillingPeriodWorkflow.preview)
    assert preview is not None and preview.preview is True
    assert preview.number is None and preview.status == InvoiceStatus.FINALIZED
    assert preview.total_amount_cents == 10000
    assert view.invoice is not None and view.invoice.number  # the draft keeps its draft number

    await handle.execute_update(
        BillingPeriodWorkflow.edit_fee_sync,
        EditFee(charge_code="seats", mode="units", units=Decimal(2)),
    )
    preview = await handle.query(BillingPeriodWorkflow.preview)
    assert preview is not None and preview.total_amount_cents == 11000
    final = await handle.execute_update(
        BillingPeriodWorkflow.finalize_invoice_sync, FinalizeInvoice()
    )
    assert final.total_amount_cents == preview.total_amount_cents
    assert await handle.query(BillingPeriodWorkflow.preview) is None


async def test_a_running_draft_follows_a_shorter_grace_period(plain: PeriodHarness) -> None:
    handle = await plain.start("sub_pro")  # the customer's grace period: 3 days
    view = await plain.wait_for_draft(handle)
    assert view.invoice is not None and view.grace_period_ends_at is not None
    drafted_deadline = view.grace_period_ends_at
    assert view.invoice.expected_finalization_at == drafted_deadline

    catalog = period_catalog(plain.sink.url, plain.suffix)
    catalog["billing_entities"][0]["grace_period_days"] = 1
    load_catalog(plain.engine, catalog)
    await handle.signal(
        BillingPeriodWorkflow.recompute_grace_period, RecomputeGracePeriod(requested_by="ops")
    )
    moved = await plain.wait_for(
        handle, lambda v: v.grace_period_ends_at == drafted_deadline - timedelta(days=2)
    )
    assert moved.phase == PeriodPhase.DRAFT
    assert TimelineKind.GRACE_PERIOD_CHANGED in kinds(plain, view.invoice.id)

    # A grace period already over: the draft is finalized at once.
    catalog["billing_entities"][0]["grace_period_days"] = 0
    load_catalog(plain.engine, catalog)
    await handle.signal(BillingPeriodWorkflow.recompute_grace_period, RecomputeGracePeriod())
    final = await handle.result()
    assert final.status == InvoiceStatus.FINALIZED
    assert final.expected_finalization_at is None  # nothing is expected of a final invoice
    assert get_invoice(plain.engine, final.id).expected_finalization_at is None


async def test_a_fixed_grace_period_does_not_follow_the_setting(plain: PeriodHarness) -> None:
    handle = await plain.start("sub_pro", grace_period_seconds=10 * 24 * HOUR)
    view = await plain.wait_for_draft(handle)
    catalog = period_catalog(plain.sink.url, plain.suffix)
    catalog["billing_entities"][0]["grace_period_days"] = 1
    load_catalog(plain.engine, catalog)
    await handle.signal(BillingPeriodWorkflow.recompute_grace_period, RecomputeGracePeriod())
    await handle.signal(
        "add_usage",
        AddUsage(
            events=[
                UsageEvent(
                    transaction_id="late-1",
                    external_subscription_id=plain.sub("sub_pro"),
                    code="api_calls",
                    timestamp=view.period_start + timedelta(days=3),
                )
            ]
        ),
    )
    await plain.wait_for(handle, lambda v: v.events_accepted == 1)
    assert (await plain.view(handle)).grace_period_ends_at == view.grace_period_ends_at
    await handle.execute_update(BillingPeriodWorkflow.finalize_invoice_sync, FinalizeInvoice())


async def test_malformed_and_early_approvals_are_refused_and_lose_nothing(
    held: PeriodHarness,
) -> None:
    # Before the period ends there is nothing to approve (a period that ends years ahead:
    # January's drafts at once, so asking it would race with its draft).
    still_open = await held.start("sub_pro", (FAR_AHEAD, FAR_AHEAD + timedelta(days=31)))
    assert (await held.view(still_open)).phase == PeriodPhase.OPEN
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await still_open.execute_update(
            BillingPeriodWorkflow.approve_invoice_sync, ApproveInvoice()
        )
    assert isinstance(refused.value.cause, ApplicationError)
    assert refused.value.cause.type == "NoDraftYet"
    assert "no draft invoice to approve yet" in str(refused.value.cause)
    assert (await held.view(still_open)).phase == PeriodPhase.OPEN
    await still_open.terminate("checked")

    handle = await held.start("sub_pro", grace_period_seconds=HOUR)
    view = await held.wait_for_draft(handle)
    await handle.signal("approve_invoice", {"note": ""})  # note must not be empty
    await handle.signal("approve_invoice", {"approved": "yes"})  # no such field
    await handle.signal("recompute_grace_period", {"grace_period_days": 1})  # not its field
    await handle.signal(  # requested_by must name someone
        "edit_fee", {"charge_code": "seats", "mode": "units", "units": "2", "requested_by": ""}
    )
    await held.wait_for(handle, lambda v: v.inputs_rejected >= 4)
    rejected = await handle.query(BillingPeriodWorkflow.rejections)
    reasons = " | ".join(r.reason for r in rejected)
    assert "malformed approve_invoice payload" in reasons
    assert "malformed recompute_grace_period payload" in reasons
    assert "requested_by" in reasons
    after = await held.view(handle)
    assert after.phase == PeriodPhase.DRAFT  # nothing approved, nothing edited
    assert after.invoice is not None and after.invoice.total_amount_cents == 10000
    await hold_and_approve(handle)
    assert await workflow_task_failures(handle) == []
    assert view.invoice is not None
    assert get_invoice(held.engine, view.invoice.id).status == InvoiceStatus.FINALIZED


async def hold_and_approve(handle: WorkflowHandle[Any, Any]) -> None:
    held = await handle.execute_update(
        BillingPeriodWorkflow.finalize_invoice_sync, FinalizeInvoice()
    )
    assert held.status == InvoiceStatus.DRAFT
    await handle.execute_update(BillingPeriodWorkflow.approve_invoice_sync, ApproveInvoice())
    await handle.result()
