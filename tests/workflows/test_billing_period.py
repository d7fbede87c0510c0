"""BillingPeriodWorkflow on the time-skipping server, with real activities, a real
database (SQLite and PostgreSQL) and a real HTTP webhook receiver."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import text
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from billing.models import InvoiceStatus
from billing.signature import verify_signature
from services.coupons import apply_coupon, get_wallet, top_up_wallet
from services.invoices import get_invoice
from services.rejections import list_rejections
from services.webhooks import list_deliveries
from tests.fixtures.periods import SECRET, PeriodHarness, harness, workflow_task_failures
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import (
    AddUsage,
    EditFee,
    FinalizeInvoice,
    PeriodPhase,
    RefreshInvoice,
    RemoveFeeAdjustment,
)

__all__ = ["harness"]  # the fixture, imported for pytest


async def finish(handle: WorkflowHandle[Any, Any]) -> None:
    """End the period cleanly: a terminated one could leave an activity that holds the
    shared test server's clock."""
    await handle.execute_update(BillingPeriodWorkflow.finalize_invoice_sync, FinalizeInvoice())
    await handle.result()


def fee(invoice: Any, code: str) -> Any:
    matches = [f for f in invoice.fees if f.code == code]
    assert matches, f"no fee {code!r} on {invoice.number}: {[f.code for f in invoice.fees]}"
    return matches[0]


async def test_seed_example_late_usage_lands_in_the_january_draft(harness: PeriodHarness) -> None:
    handle = await harness.start("sub_pro")
    await harness.wait_for_draft(handle)

    # "Today" is inside the grace period: an event stamped January 11 is included, one
    # stamped February 2 belongs to the February invoice.
    receipt = await handle.execute_update(
        BillingPeriodWorkflow.add_usage_sync,
        AddUsage(
            events=[
                harness.event("jan-11", "api_calls", datetime(2026, 1, 11, 17, 15, tzinfo=UTC)),
                harness.event("feb-02", "api_calls", datetime(2026, 2, 2, 16, 15, tzinfo=UTC)),
            ]
        ),
    )
    assert receipt.accepted == 1
    assert [r.transaction_id for r in receipt.rejected] == ["feb-02"]
    assert "2026-02-01..2026-02-28" in receipt.rejected[0].reason

    draft = await handle.execute_update(
        BillingPeriodWorkflow.refresh_invoice_sync, RefreshInvoice()
    )
    assert draft.status == InvoiceStatus.DRAFT
    assert draft.number == "ACME-DRAFT"
    assert fee(draft, "api_calls").units == Decimal("1")
    assert fee(draft, "subscription").amount_cents == 10000

    final = await handle.result()  # the 3-day grace timer is skipped
    assert final.status == InvoiceStatus.FINALIZED
    assert final.number == "ACME-000001"
    assert final.fees_amount_cents == 10001
    assert final.total_amount_cents == 10001
    assert await workflow_task_failures(handle) == []


async def test_fee_edits_survive_refresh_and_finalization(harness: PeriodHarness) -> None:
    handle = await harness.start("sub_pro")
    await harness.wait_for_draft(handle)
    jan = datetime(2026, 1, 5, tzinfo=UTC)
    await handle.execute_update(
        BillingPeriodWorkflow.add_usage_sync,
        AddUsage(events=[harness.event(f"call-{i}", "api_calls", jan) for i in range(300)]),
    )

    # Total units through the graduated charge: 12 GB = 10 x 2 + 2 x 1 = 22.00
    edited = await handle.execute_update(
        BillingPeriodWorkflow.edit_fee_sync,
        EditFee(charge_code="storage_gb", mode="units", units=Decimal("12")),
    )
    assert fee(edited, "storage_gb").amount_cents == 2200
    assert fee(edited, "storage_gb").adjusted

    # Total amount replaces the computed amount (300 calls x 0.01 would be 3.00).
    edited = await handle.execute_update(
        BillingPeriodWorkflow.edit_fee_sync,
        EditFee(
            charge_code="api_calls", mode="amount", units=Decimal("1"), unit_amount=Decimal("1.50")
        ),
    )
    assert fee(edited, "api_calls").amount_cents == 150

    # A fee for a charge that produced none (0 seats), and a display name only edit.
    edited = await handle.execute_update(
        BillingPeriodWorkflow.edit_fee_sync,
        EditFee(
            charge_code="seats", mode="units", units=Decimal("2"), display_name="Seats (manual)"
        ),
    )
    assert fee(edited, "seats").amount_cents == 1000
    assert fee(edited, "seats").display_name == "Seats (manual)"

    # Later usage does not change an adjusted fee; refresh keeps every adjustment.
    await handle.execute_update(
        BillingPeriodWorkflow.add_usage_sync,
        AddUsage(
            events=[
                harness.event("more-calls", "api_calls", jan),
                harness.event("gb-1", "storage_gb", jan, gb=50),
            ]
        ),
    )
    refreshed = await handle.execute_update(
        BillingPeriodWorkflow.refresh_invoice_sync, RefreshInvoice()
    )
    assert fee(refreshed, "storage_gb").amount_cents == 2200
    assert fee(refreshed, "api_calls").amount_cents == 150
    assert fee(refreshed, "seats").amount_cents == 1000

    await handle.signal(BillingPeriodWorkflow.finalize_invoice, FinalizeInvoice())
    final = await handle.result()
    assert final.status == InvoiceStatus.FINALIZED
    assert final.fees_amount_cents == 10000 + 2200 + 150 + 1000
    assert [f.adjusted for f in final.fees if f.code != "subscription"] == [True, True, True]


async def test_removing_an_adjustment_restores_the_computed_fee(harness: PeriodHarness) -> None:
    handle = await harness.start("sub_pro")
    await harness.wait_for_draft(handle)
    jan = datetime(2026, 1, 5, tzinfo=UTC)
    await handle.execute_update(
        BillingPeriodWorkflow.add_usage_sync,
        AddUsage(events=[harness.event("gb", "storage_gb", jan, gb=3)]),
    )
    edited = await handle.execute_update(
        BillingPeriodWorkflow.edit_fee_sync,
        EditFee(charge_code="storage_gb", mode="display_name", display_name="Disk"),
    )
    assert fee(edited, "storage_gb").display_name == "Disk"
    assert fee(edited, "storage_gb").amount_cents == 600
    restored = await handle.execute_update(
        BillingPeriodWorkflow.remove_fee_adjustment_sync,
        RemoveFeeAdjustment(charge_code="storage_gb"),
    )
    assert not fee(restored, "storage_gb").adjusted
    assert fee(restored, "storage_gb").display_name != "Disk"
    await finish(handle)


async def test_operator_edits_never_wait_behind_the_close_on_the_task_queue(
    harness: PeriodHarness,
) -> None:
    """An edit runs in the workflow task that received it (a local activity): a month-end
    close's backlog of activities on the task queue cannot keep an operator waiting, and
    the task itself has the period's priority (starter.periods.give_operator_priority)."""
    handle = await harness.start("sub_pro")
    await harness.wait_for_draft(handle)
    await handle.execute_update(
        BillingPeriodWorkflow.edit_fee_sync,
        EditFee(charge_code="storage_gb", mode="display_name", display_name="Disk"),
    )
    await handle.execute_update(
        BillingPeriodWorkflow.remove_fee_adjustment_sync,
        RemoveFeeAdjustment(charge_code="storage_gb"),
    )
    await handle.execute_update(BillingPeriodWorkflow.refresh_invoice_sync, RefreshInvoice())
    await finish(handle)

    priorities: dict[str, set[int]] = {}
    local_steps: list[str] = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled = event.activity_task_scheduled_event_attributes
            name = scheduled.activity_type.name
            priorities.setdefault(name, set()).add(scheduled.priority.priority_key)
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            data = event.marker_recorded_event_attributes.details.get("data")
            if data is not None and data.payloads:
                local_steps.append(json.loads(data.payloads[0].data).get("activity_type", ""))
    # The edits and the period's own steps are local activities: never on the task queue.
    for step in ("adjust_fee", "remove_adjustment", "refresh_draft", "draft_invoice"):
        assert step not in priorities, step
    for step in ("adjust_fee", "remove_adjustment", "refresh_draft", "finalize_invoice"):
        assert step in local_steps, (step, local_steps)
    assert priorities == {"deliver_webhook": {0}}  # unset: the default, 3


@contextlib.contextmanager
def draft_locked(engine: sqlalchemy.Engine, invoice_id: str) -> Iterator[None]:
    """Hold the draft's row lock (on SQLite, the database's write lock) for the block, so
    a refresh of the draft waits until it ends."""
    with engine.begin() as connection:
        lock = " FOR UPDATE" if engine.dialect.name == "postgresql" else ""
        connection.execute(
            text(f"SELECT id FROM invoices WHERE id = :id{lock}"), {"id": invoice_id}
        )
        yield


async def wait_for_history(
    handle: WorkflowHandle[Any, Any], predicate: Callable[[list[HistoryEvent]], bool]
) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while not predicate([event async for event in handle.fetch_history_events()]):
        assert asyncio.get_running_loop().time() < deadline, "history condition not reached"
        await asyncio.sleep(0.05)


async def test_usage_received_in_grace_is_billed_when_the_grace_ends_during_a_refresh(
    harness: PeriodHarness,
) -> None:
    """A usage batch that arrives inside the grace period while the draft is being
    refreshed is billed, even when the grace period ends before the refresh does (without
    the ``apply-inputs-received-before-deadline`` patch it is refused as late)."""
    # The refresh comes 60 s after the usage; the grace period ends 10 s after that. Time
    # skips up to the refresh, then runs on the clock while the refresh waits on the lock.
    handle = await harness.start("sub_pro", grace_period_seconds=70, refresh_debounce_seconds=60)
    draft = await harness.wait_for_draft(handle)
    assert draft.invoice is not None
    jan = datetime(2026, 1, 5, tzinfo=UTC)
    await handle.signal("add_usage", AddUsage(events=[harness.event("in-1", "api_calls", jan)]))
    await harness.wait_for(handle, lambda v: v.events_accepted == 1)  # refresh due in 60 s

    def scheduled(name: str) -> Callable[[list[HistoryEvent]], bool]:
        return lambda events: any(
            e.activity_task_scheduled_event_attributes.activity_type.name == name for e in events
        )

    with draft_locked(harness.engine, draft.invoice.id):
        await harness.env.sleep(61)  # the refresh starts and waits on the lock
        await wait_for_history(handle, scheduled("refresh_draft"))
        await handle.signal(
            "add_usage",
            AddUsage(events=[harness.event("in-2", "api_calls", jan)]),
        )

        def delivered(events: list[HistoryEvent]) -> bool:  # the workflow has seen it
            signaled = [
                i
                for i, e in enumerate(events)
                if e.HasField("workflow_execution_signaled_event_attributes")
            ]
            return len(signaled) == 2 and any(
                e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
                for e in events[signaled[-1] :]
            )

        await wait_for_history(handle, delivered)
        assert draft.grace_period_ends_at is not None
        while await harness.env.get_current_time() <= draft.grace_period_ends_at:
            await asyncio.sleep(0.2)  # the grace period ends while the refresh waits
    final = await harness.latest(handle).result()

    assert final.status == InvoiceStatus.FINALIZED
    assert fee(final, "api_calls").units == 2
    assert list_rejections(harness.engine, source=handle.id) == []


async def test_coupon_and_credits_added_in_grace_apply_only_at_finalization(
    harness: PeriodHarness,
) -> None:
    handle = await harness.start("sub_pro")
    await harness.wait_for_draft(handle)
    apply_coupon(
        harness.engine,
        customer_external_id="cust_inherit",
        coupon_code="welcome",
        applied_coupon_id="ac-1",
    )
    top_up_wallet(
        harness.engine, customer_external_id="cust_inherit", amount_cents=1000, transaction_id="t1"
    )
    draft = await handle.execute_update(
        BillingPeriodWorkflow.refresh_invoice_sync, RefreshInvoice()
    )
    assert draft.coupons_amount_cents == 0
    assert draft.prepaid_credit_amount_cents == 0
    assert draft.total_amount_cents == 10000
    assert get_wallet(harness.engine, "cust_inherit").balance_cents == 1000

    await handle.execute_update(BillingPeriodWorkflow.finalize_invoice_sync, FinalizeInvoice())
    final = await handle.result()
    assert final.coupons_amount_cents == 2500
    assert final.prepaid_credit_amount_cents == 1000
    assert final.total_amount_cents == 10000 - 2500 - 1000
    assert get_wallet(harness.engine, "cust_inherit").balance_cents == 0


@pytest.mark.parametrize(
    ("subscription", "status"),
    [
        ("sub_skip", InvoiceStatus.CLOSED),  # customer skip
        ("sub_inherit_true", InvoiceStatus.FINALIZED),  # inherit, entity true
        ("sub_inherit_false", InvoiceStatus.CLOSED),  # inherit, entity false
        ("sub_finalize", InvoiceStatus.FINALIZED),  # customer finalize, entity false
    ],
)
async def test_empty_invoice_matrix(
    harness: PeriodHarness, subscription: str, status: InvoiceStatus
) -> None:
    handle = await harness.start(subscription, grace_period_seconds=0)
    final = await handle.result()
    assert final.status == status
    assert final.fees_amount_cents == 0
    deliveries = list_deliveries(harness.engine, invoice_id=final.id)
    if status == InvoiceStatus.CLOSED:
        assert final.number in ("", None) or (
            "DRAFT" not in final.number and not final.number[-1].isdigit()
        )
        assert deliveries == []
        assert harness.sink.accepted == []
    else:
        assert final.number.endswith("000001")
        assert [d.status for d in deliveries] == ["succeeded"]
        assert len(harness.sink.accepted) == 1


async def test_coupon_to_zero_still_finalizes_and_sends_the_webhook(
    harness: PeriodHarness,
) -> None:
    apply_coupon(
        harness.engine,
        customer_external_id="cust_skip",
        coupon_code="everything",
        applied_coupon_id="ac-everything",
    )
    handle = await harness.start("sub_skip_paid", grace_period_seconds=0)
    final = await handle.result()
    assert final.status == InvoiceStatus.FINALIZED
    assert final.fees_amount_cents == 10000
    assert final.total_amount_cents == 0
    [received] = harness.sink.accepted
    body = json.loads(received.body)
    assert body["webhook_type"] == "invoice.created"
    assert body["invoice"]["number"] == final.number


async def test_finalize_now_ends_the_grace_period_early(harness: PeriodHarness) -> None:
    handle = await harness.start("sub_pro", grace_period_seconds=30 * 24 * 3600)
    view = await harness.wait_for_draft(handle)
    assert view.grace_period_ends_at is not None
    final = await handle.execute_update(
        BillingPeriodWorkflow.finalize_invoice_sync, FinalizeInvoice(reason="customer asked")
    )
    assert final.status == InvoiceStatus.FINALIZED
    result = await handle.result()
    assert result.number == final.number
    described = await handle.describe()
    assert described.close_time is not None
    assert described.close_time < view.grace_period_ends_at


async def test_zero_grace_finalizes_at_once(harness: PeriodHarness) -> None:
    handle = await harness.start("sub_pro", grace_period_seconds=0)
    final = await handle.result()
    assert final.status == InvoiceStatus.FINALIZED
    assert get_invoice(harness.engine, final.id).number == "ACME-000001"


async def test_changes_after_finalization_are_refused(harness: PeriodHarness) -> None:
    handle = await harness.start("sub_pro", webhook_retry_window_seconds=3600)
    harness.sink.respond_with(503)  # keeps the workflow open, delivering, after finalization
    await harness.wait_for_draft(handle)
    await handle.signal(BillingPeriodWorkflow.finalize_invoice, FinalizeInvoice())
    await harness.wait_for(handle, lambda v: v.phase == PeriodPhase.FINALIZED)

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(
            BillingPeriodWorkflow.edit_fee_sync,
            EditFee(charge_code="seats", mode="units", units=Decimal("1")),
        )
    assert isinstance(refused.value.cause, ApplicationError)
    assert "invoice ACME-000001 is finalized" in refused.value.cause.message

    await handle.signal(
        "add_usage",
        AddUsage(events=[harness.event("late", "api_calls", datetime(2026, 1, 3, tzinfo=UTC))]),
    )
    await harness.wait_for(handle, lambda v: v.inputs_rejected >= 1)
    rejections = await handle.query(BillingPeriodWorkflow.rejections)
    assert "is finalized" in rejections[-1].reason

    harness.sink.respond_with(200)
    final = await handle.result()
    assert final.fees_amount_cents == 10000  # the late event changed nothing
    assert await workflow_task_failures(handle) == []


async def test_duplicate_transaction_ids_count_once(harness: PeriodHarness) -> None:
    handle = await harness.start("sub_pro")
    await harness.wait_for_draft(handle)
    jan = datetime(2026, 1, 9, tzinfo=UTC)
    batch = AddUsage(
        events=[harness.event("dup-1", "api_calls", jan), harness.event("dup-2", "api_calls", jan)]
    )
    first = await handle.execute_update(BillingPeriodWorkflow.add_usage_sync, batch)
    again = await handle.execute_update(BillingPeriodWorkflow.add_usage_sync, batch)
    assert (first.accepted, first.duplicates) == (2, 0)
    assert (again.accepted, again.duplicates) == (0, 2)
    draft = await handle.execute_update(
        BillingPeriodWorkflow.refresh_invoice_sync, RefreshInvoice()
    )
    assert fee(draft, "api_calls").units == Decimal("2")
    await finish(handle)


async def test_malformed_signals_are_recorded_without_task_failures(
    harness: PeriodHarness,
) -> None:
    handle = await harness.start("sub_pro")
    await harness.wait_for_draft(handle)
    await handle.signal("add_usage", {"events": "not a list"})
    await handle.signal("add_usage", {"events": [{"transaction_id": "x"}]})
    await handle.signal("edit_fee", {"charge_code": "seats", "mode": "units", "units": "-4"})
    await handle.signal("edit_fee", {"charge_code": "seats", "mode": "units", "units": "NaN"})
    await handle.signal("edit_fee", {"charge_code": "nope", "mode": "units", "units": "1"})
    await handle.signal("finalize_invoice", args=["garbage", "more garbage"])
    await handle.signal("no_such_signal", {"a": 1})
    await handle.signal("add_usage", RawValue(_raw_bytes_payload()))

    view = await harness.wait_for(handle, lambda v: v.inputs_rejected >= 8)
    assert view.phase == PeriodPhase.DRAFT
    reasons = [r.reason for r in await handle.query(BillingPeriodWorkflow.rejections)]
    assert any("malformed add_usage" in r for r in reasons)
    assert any("unknown signal 'no_such_signal'" in r for r in reasons)
    assert any("'nope' is not part of this subscription's plan" in r for r in reasons)
    stored: list[str] = []
    for _ in range(100):  # stored by an activity right after the refusal
        stored = [r.reason for r in list_rejections(harness.engine, source=handle.id)]
        if len(stored) >= 8:
            break
        await asyncio.sleep(0.1)
    assert len(stored) >= 8  # every refusal is kept in the database, with its reason
    assert any("unknown signal 'no_such_signal'" in r for r in stored)

    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(
            "edit_fee_sync", {"charge_code": "seats", "mode": "amount"}, result_type=dict
        )
    assert await workflow_task_failures(handle) == []
    await finish(handle)


def _raw_bytes_payload() -> Any:
    from temporalio.api.common.v1 import Payload

    return Payload(metadata={"encoding": b"binary/plain"}, data=b"\xff\x00garbage")


async def test_webhook_receiver_failing_then_recovering(harness: PeriodHarness) -> None:
    harness.sink.fail_next(3, status=502)
    handle = await harness.start("sub_pro", grace_period_seconds=0)
    final = await handle.result()
    [delivery] = list_deliveries(harness.engine, invoice_id=final.id)
    assert delivery.status == "succeeded"
    assert delivery.attempts == 4
    seen = harness.sink.for_webhook(delivery.id)
    assert len(seen) == 4
    ok = seen[-1]
    assert verify_signature(
        SECRET,
        ok.body,
        int(ok.headers["x-billing-webhook-timestamp"]),
        ok.headers["x-billing-webhook-signature"],
        now=int(ok.headers["x-billing-webhook-timestamp"]),
    )


async def test_continue_as_new_keeps_every_event(harness: PeriodHarness) -> None:
    started = await harness.start("sub_pro", max_signals_per_run=4)
    handle = harness.latest(started)
    await harness.wait_for_draft(handle)
    jan = datetime(2026, 1, 20, tzinfo=UTC)
    sent = 0
    for batch in range(12):
        events = [harness.event(f"b{batch}-{i}", "api_calls", jan) for i in range(500)]
        await handle.signal("add_usage", AddUsage(events=events))
        sent += len(events)
    await harness.wait_for(handle, lambda v: v.events_accepted == sent, timeout=120)
    first_run = harness.client.get_workflow_handle(
        started.id, run_id=started.first_execution_run_id
    )
    for _ in range(200):  # the handover follows the last store call within moments
        if (await first_run.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW:
            break
        await asyncio.sleep(0.05)
    assert (await first_run.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW
    final = await handle.execute_update(
        BillingPeriodWorkflow.finalize_invoice_sync, FinalizeInvoice()
    )
    assert fee(final, "api_calls").units == Decimal(sent)
    # The latest run's handle: following the chain of runs from the first one with the
    # time-skipping handle sometimes never returns on the test server.
    assert (await handle.result()).fees_amount_cents == final.fees_amount_cents


BURST = 40


async def test_a_burst_of_large_usage_signals_never_fails_a_workflow_task(
    harness: PeriodHarness,
) -> None:
    started = await harness.start("sub_pro")
    handle = harness.latest(started)
    await harness.wait_for_draft(handle)
    jan = datetime(2026, 1, 21, tzinfo=UTC)
    batches = [
        AddUsage(events=[harness.event(f"burst{b}-{i}", "api_calls", jan) for i in range(1000)])
        for b in range(BURST)
    ]
    # Sent all at once: many arrive in one workflow task, which must stay short.
    await asyncio.gather(*(handle.signal("add_usage", batch) for batch in batches))
    await harness.wait_for(handle, lambda v: v.events_accepted == BURST * 1000, timeout=240)
    assert await workflow_task_failures(started) == []
    await finish(handle)
