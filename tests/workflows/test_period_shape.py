"""The shape of a billing period's history (patches ``lean-period-shape`` and
``local-store-steps``).

A period records its usage, drafts the invoice in one store step (settings, draft and
drafted webhook together), finalizes it and delivers the webhook: no settings activity at
start, and the search attributes that never change are given at start, so a period with a
draft and a finalization upserts at most twice. Its own store steps are local activities
(a marker each); the webhook delivery is the one regular activity.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory

from billing.models import InvoiceStatus
from starter.periods import start_period_operation
from tests.fixtures.periods import JANUARY, PeriodHarness, harness
from workflows import search_attributes, versions
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import AddUsage, BillingPeriodInput

__all__ = ["harness"]  # the fixture, imported for pytest

HISTORIES = Path(__file__).with_name("histories")
LEAN_ACTIVITIES = r"(record_usage )*draft_invoice finalize_invoice deliver_webhook"
PATCH_MARKER = "core_patch"
LOCAL_ACTIVITY_MARKER = "core_local_activity"


def period_shape(events: Iterable[HistoryEvent]) -> tuple[list[str], int]:
    """The activity types a period scheduled, in order, and its search-attribute upserts.

    The SDK's own upsert of ``TemporalChangeVersion`` beside each patch marker is left
    out: one per patch a run consults (one in the lean shape).
    """
    activities: list[str] = []
    upserts = 0
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            activities.append(event.activity_task_scheduled_event_attributes.activity_type.name)
        elif event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            if set(fields.indexed_fields) != {"TemporalChangeVersion"}:
                upserts += 1
    return activities, upserts


def markers(events: Iterable[HistoryEvent], name: str) -> list[HistoryEvent]:
    return [
        e
        for e in events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and e.marker_recorded_event_attributes.marker_name == name
    ]


def local_activities(events: Iterable[HistoryEvent]) -> list[str]:
    """The activity types a period ran as local activities, in order (from their markers)."""
    found = []
    for marker in markers(events, LOCAL_ACTIVITY_MARKER):
        data = marker.marker_recorded_event_attributes.details["data"].payloads[0].data
        found.append(json.loads(data)["activity_type"])
    return found


def assert_lean_shape(activities: list[str], upserts: int) -> None:
    assert "load_period_settings" not in activities
    assert re.fullmatch(LEAN_ACTIVITIES, " ".join(activities)), activities
    assert upserts <= 2, f"{upserts} search-attribute upserts"


async def test_a_new_period_has_the_lean_shape(harness: PeriodHarness) -> None:
    period = BillingPeriodInput(
        subscription_external_id=harness.sub("sub_pro"),
        customer_external_id="cust_inherit",
        period_start=JANUARY[0],
        period_end=JANUARY[1],
        grace_period_seconds=0,
        refresh_debounce_seconds=0,
        webhook_retry_window_seconds=600,
    )
    operation = start_period_operation(period, task_queue=harness.task_queue)
    usage = AddUsage(events=[harness.event("shape-1", "api_calls", JANUARY[0] + timedelta(days=3))])
    receipt = await harness.client.execute_update_with_start_workflow(
        BillingPeriodWorkflow.add_usage_sync, usage, start_workflow_operation=operation
    )
    assert receipt.accepted == 1
    handle = await operation.workflow_handle()
    harness.started.append(handle.id)
    invoice = await handle.result()
    assert invoice.status == InvoiceStatus.FINALIZED

    events = [e async for e in handle.fetch_history_events()]
    activities, upserts = period_shape(events)
    assert activities == ["deliver_webhook"]
    # A grace period of zero ends in the draft's own step: no finalization step of its
    # own, and one upsert (the final status, number and total), not one per phase.
    steps = local_activities(events)
    assert steps[0] == "record_usage"
    assert re.fullmatch(r"(record_usage )*draft_invoice", " ".join(steps)), steps
    assert upserts == 1, f"{upserts} search-attribute upserts"
    # The newest shape patch alone: it stands for every earlier one.
    (marker,) = markers(events, PATCH_MARKER)
    data = marker.marker_recorded_event_attributes.details["patch-data"].payloads[0].data
    assert json.loads(data)["id"] == versions.PATCH_DRAFT_FINALIZES_WHEN_DUE
    tasks = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]
    assert len(tasks) <= 5, f"{len(tasks)} workflow tasks"
    found = (await handle.describe()).typed_search_attributes
    assert found.get(search_attributes.CUSTOMER) == "cust_inherit"
    assert found.get(search_attributes.SUBSCRIPTION) == period.subscription_external_id
    assert found.get(search_attributes.INVOICE_STATUS) == "finalized"
    assert found.get(search_attributes.INVOICE_NUMBER) == invoice.number
    assert found.get(search_attributes.TOTAL_CENTS) == invoice.total_amount_cents


def test_the_lean_shape_ran_its_store_steps_as_regular_activities() -> None:
    path = HISTORIES / "lean_billing_period_finalized.json"
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    activities, _ = period_shape(history.events)
    assert local_activities(history.events) == []
    assert activities[0] == "draft_invoice" and activities[-2:] == [
        "finalize_invoice",
        "deliver_webhook",
    ]


def test_the_shape_before_the_patch_fails_the_check() -> None:
    path = HISTORIES / "billing_period_closed_empty.json"
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    activities, upserts = period_shape(history.events)
    assert activities[0] == "load_period_settings"
    with pytest.raises(AssertionError):
        assert_lean_shape(activities, upserts)


async def test_a_period_started_without_attributes_still_gets_them(
    harness: PeriodHarness,
) -> None:
    """An older starter gives neither the customer nor the search attributes."""
    period = BillingPeriodInput(
        subscription_external_id=harness.sub("sub_skip"),
        period_start=JANUARY[0],
        period_end=JANUARY[1],
        grace_period_seconds=0,
    )
    handle = await harness.client.start_workflow(
        BillingPeriodWorkflow.run,
        period,
        id=f"older-starter/{period.subscription_external_id}",
        task_queue=harness.task_queue,
    )
    harness.started.append(handle.id)
    invoice = await handle.result()
    assert invoice.status == InvoiceStatus.CLOSED
    found = (await handle.describe()).typed_search_attributes
    assert found.get(search_attributes.SUBSCRIPTION) == period.subscription_external_id
    assert found.get(search_attributes.PERIOD_START) == period.period_start
    assert found.get(search_attributes.CUSTOMER) == "cust_skip"
    assert found.get(search_attributes.INVOICE_STATUS) == "closed"
    view = await handle.query(BillingPeriodWorkflow.invoice)
    assert view.customer_external_id == "cust_skip"
