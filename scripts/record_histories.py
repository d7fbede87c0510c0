"""Record workflow histories for the replay test (tests/workflows/test_replay.py).

Runs a few complete billing periods on the time-skipping test server with the real worker,
activities, a SQLite database and a webhook sink, then saves each history as JSON in
tests/workflows/histories/. A file that exists is kept: the histories recorded by an
earlier release are what guards the periods it started (docs/UPGRADES.md); ``--force``
records every scenario again. Usage::

    .venv/bin/python scripts/record_histories.py [--force]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from temporalio.api.common.v1 import Payload  # noqa: E402
from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.client import WorkflowHandle  # noqa: E402
from temporalio.common import RawValue  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from billing.models import InvoiceStatus, UsageEvent  # noqa: E402
from config.binaries import temporal_test_server  # noqa: E402
from config.temporal import register_search_attributes  # noqa: E402
from services.catalog import load_catalog  # noqa: E402
from starter.periods import _start_options  # noqa: E402
from store.db import make_engine, upgrade  # noqa: E402
from tests.fixtures.periods import (  # noqa: E402
    JANUARY,
    PeriodHarness,
    period_catalog,
    period_harness,
)
from workflows.billing_period import BillingPeriodWorkflow  # noqa: E402
from workflows.messages import (  # noqa: E402
    AddUsage,
    ApproveInvoice,
    BillingPeriodInput,
    EditFee,
    FinalizeInvoice,
    RecomputeGracePeriod,
    RefreshInvoice,
)

HISTORIES = ROOT / "tests" / "workflows" / "histories"
# The shape of the lifecycle these histories show, as a file-name prefix: "when_due_"
# (patch "draft-finalizes-when-due"); "local_edits_" is patch "local-edits-usage-as-received",
# "local_" is patch "local-store-steps", "lean_" and
# "control_" are the lean shape's, and the histories of the shape before patch
# "lean-period-shape" have none. Earlier shapes are never overwritten.
SHAPE = "when_due_"


async def finalized_with_usage_edit_and_refresh(harness: PeriodHarness) -> WorkflowHandle[Any, Any]:
    """Usage by update and by signal, a fee edit, a refresh, the grace timer, invoice.created."""
    handle = await harness.start("sub_pro", customer_external_id="cust_inherit")
    await harness.wait_for_draft(handle)
    jan = JANUARY[0].replace(day=5)
    events = [
        UsageEvent(
            transaction_id=f"call-{i}",
            external_subscription_id="sub_pro",
            code="api_calls",
            timestamp=jan,
            properties={},
        )
        for i in range(25)
    ]
    await handle.execute_update(BillingPeriodWorkflow.add_usage_sync, AddUsage(events=events[:20]))
    await handle.signal("add_usage", AddUsage(events=events[20:]))
    await handle.execute_update(
        BillingPeriodWorkflow.edit_fee_sync,
        EditFee(charge_code="storage_gb", mode="units", units=Decimal("12")),
    )
    await handle.execute_update(BillingPeriodWorkflow.refresh_invoice_sync, RefreshInvoice())
    final = await handle.result()
    assert final.status == InvoiceStatus.FINALIZED, final
    return handle


async def empty_period_closed_under_skip(harness: PeriodHarness) -> WorkflowHandle[Any, Any]:
    handle = await harness.start("sub_skip", customer_external_id="cust_skip")
    final = await handle.result()
    assert final.status == InvoiceStatus.CLOSED, final
    return handle


async def malformed_signals_then_finalize_now(harness: PeriodHarness) -> WorkflowHandle[Any, Any]:
    handle = await harness.start("sub_finalize", customer_external_id="cust_finalize")
    await harness.wait_for_draft(handle)
    await handle.signal("add_usage", {"events": "not a list"})
    await handle.signal("edit_fee", {"charge_code": "nope", "mode": "units", "units": "1"})
    await handle.signal("no_such_signal", {"a": 1})
    await handle.signal(
        "add_usage",
        RawValue(Payload(metadata={"encoding": b"binary/plain"}, data=b"\xff\x00garbage")),
    )
    await harness.wait_for(handle, lambda v: v.inputs_rejected >= 4)
    await handle.execute_update(BillingPeriodWorkflow.finalize_invoice_sync, FinalizeInvoice())
    final = await handle.result()
    assert final.status == InvoiceStatus.FINALIZED, final
    return handle


async def usage_at_start_then_undecodable_payloads(
    harness: PeriodHarness,
) -> WorkflowHandle[Any, Any]:
    """Usage delivered with the start (signal-with-start: the first workflow task handles
    the signal before the run begins), then usage payloads of every malformed kind: not
    JSON, not UTF-8, an unknown encoding, no payload, two payloads, JSON that is no usage
    message; then late usage and finalize-now."""
    sub = harness.sub("sub_pro")
    period = BillingPeriodInput(
        subscription_external_id=sub,
        customer_external_id="cust_inherit",
        period_start=JANUARY[0],
        period_end=JANUARY[1],
        webhook_retry_window_seconds=600,
        refresh_debounce_seconds=0,
    )

    def usage(transaction_id: str) -> AddUsage:
        at = JANUARY[0].replace(day=5)
        event = UsageEvent(
            transaction_id=transaction_id,
            external_subscription_id=sub,
            code="api_calls",
            timestamp=at,
            properties={},
        )
        return AddUsage(events=[event])

    handle = await harness.client.start_workflow(
        BillingPeriodWorkflow.run,
        period,
        start_signal="add_usage",
        start_signal_args=[usage("at-start")],
        **_start_options(period, harness.task_queue, "UTC"),
    )
    harness.started.append(handle.id)
    for encoding, data in [
        (b"json/plain", b'{"events": ['),
        (b"json/plain", b"\xff\xfe"),
        (b"weird/encoding", b"{}"),
        (b"binary/null", b""),
    ]:
        await handle.signal(
            "add_usage", RawValue(Payload(metadata={"encoding": encoding}, data=data))
        )
    await handle.signal("add_usage", args=[usage("two-1"), usage("two-2")])
    await handle.signal("add_usage", args=[])
    await handle.signal("add_usage", "[1, 2]")
    await harness.wait_for_draft(handle)
    await handle.signal("add_usage", usage("late"))
    await harness.wait_for(handle, lambda v: v.events_accepted == 2)
    await handle.execute_update(BillingPeriodWorkflow.finalize_invoice_sync, FinalizeInvoice())
    final = await handle.result()
    assert final.status == InvoiceStatus.FINALIZED, final
    return handle


async def held_edited_then_approved(harness: PeriodHarness) -> WorkflowHandle[Any, Any]:
    """Held by an approval rule (invoice.approval_required), a fee edit and late usage
    while held, a finalize-now that leaves it held, then an approval."""
    handle = await harness.start("sub_pro", customer_external_id="cust_inherit")
    await harness.wait_for_draft(handle)
    held = await handle.execute_update(
        BillingPeriodWorkflow.finalize_invoice_sync, FinalizeInvoice(requested_by="bob")
    )
    assert held.status == InvoiceStatus.DRAFT, held
    await handle.execute_update(
        BillingPeriodWorkflow.edit_fee_sync,
        EditFee(charge_code="seats", mode="units", units=Decimal("2"), requested_by="carol"),
    )
    late = UsageEvent(
        transaction_id="late-call",
        external_subscription_id="sub_pro-control",
        code="api_calls",
        timestamp=JANUARY[0].replace(day=20),
        properties={},
    )
    await handle.signal("add_usage", AddUsage(events=[late]))
    await harness.wait_for(handle, lambda v: v.events_accepted == 1)
    await handle.execute_update(BillingPeriodWorkflow.finalize_invoice_sync, FinalizeInvoice())
    await handle.execute_update(
        BillingPeriodWorkflow.approve_invoice_sync,
        ApproveInvoice(note="checked", requested_by="alice"),
    )
    final = await handle.result()
    assert final.status == InvoiceStatus.FINALIZED, final
    return handle


async def grace_period_followed_then_auto_approved(
    harness: PeriodHarness,
) -> WorkflowHandle[Any, Any]:
    """The grace period follows a shorter setting; the invoice is held and approves itself."""
    handle = await harness.start("sub_skip_paid", customer_external_id="cust_skip")
    await harness.wait_for_draft(handle)
    catalog = catalog_with_approval(harness.sink.url, harness.suffix)
    catalog["billing_entities"][0]["grace_period_days"] = 1
    load_catalog(harness.engine, catalog)
    await handle.signal(
        BillingPeriodWorkflow.recompute_grace_period, RecomputeGracePeriod(requested_by="ops")
    )
    final = await handle.result()
    assert final.status == InvoiceStatus.FINALIZED, final
    assert final.approval is not None and final.approval.approved_by == "system", final
    return handle


# The periods a grace period of zero ends at once: February, beside the January ones.
FEBRUARY = (JANUARY[1], JANUARY[1].replace(month=3))


async def finalized_at_once(harness: PeriodHarness) -> WorkflowHandle[Any, Any]:
    """A grace period of zero: the draft's own step finalizes it (invoice.drafted too)."""
    handle = await harness.start(
        "sub_pro", FEBRUARY, customer_external_id="cust_inherit", grace_period_seconds=0
    )
    final = await handle.result()
    assert final.status == InvoiceStatus.FINALIZED, final
    return handle


async def closed_at_once(harness: PeriodHarness) -> WorkflowHandle[Any, Any]:
    handle = await harness.start(
        "sub_skip", FEBRUARY, customer_external_id="cust_skip", grace_period_seconds=0
    )
    final = await handle.result()
    assert final.status == InvoiceStatus.CLOSED, final
    return handle


async def held_at_once_then_approved(harness: PeriodHarness) -> WorkflowHandle[Any, Any]:
    """A grace period of zero under an approval rule: held by the draft's own step."""
    handle = await harness.start(
        "sub_pro", FEBRUARY, customer_external_id="cust_inherit", grace_period_seconds=0
    )
    await harness.wait_for(handle, lambda v: v.phase == "awaiting_approval")
    await handle.execute_update(
        BillingPeriodWorkflow.approve_invoice_sync, ApproveInvoice(requested_by="alice")
    )
    final = await handle.result()
    assert final.status == InvoiceStatus.FINALIZED, final
    return handle


SCENARIOS = {
    f"{SHAPE}billing_period_finalized": finalized_with_usage_edit_and_refresh,
    f"{SHAPE}billing_period_closed_empty": empty_period_closed_under_skip,
    f"{SHAPE}billing_period_malformed_signals": malformed_signals_then_finalize_now,
    f"{SHAPE}billing_period_usage_at_start": usage_at_start_then_undecodable_payloads,
    f"{SHAPE}billing_period_finalized_at_once": finalized_at_once,
    f"{SHAPE}billing_period_closed_at_once": closed_at_once,
}
# Periods under approval rules (their own catalog, subscription ids end in "-control").
CONTROL_SCENARIOS = {
    f"{SHAPE}control_billing_period_held_then_approved": held_edited_then_approved,
    f"{SHAPE}control_billing_period_grace_followed": grace_period_followed_then_auto_approved,
    f"{SHAPE}control_billing_period_held_at_once": held_at_once_then_approved,
}


async def child_workflow_ids(handle: WorkflowHandle[Any, Any]) -> list[str]:
    ids = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
            ids.append(
                event.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id
            )
    return ids


async def save(handle: WorkflowHandle[Any, Any], name: str) -> None:
    history = await handle.fetch_history()
    path = HISTORIES / f"{name}.json"
    path.write_text(history.to_json() + "\n")
    print(f"wrote {path.relative_to(ROOT)} ({len(history.events)} events)")


def catalog_with_drafted_webhook(webhook_url: str, suffix: str) -> dict[str, Any]:
    catalog = period_catalog(webhook_url, suffix)
    for entity in catalog["billing_entities"]:
        entity["send_invoice_drafted_webhook"] = True  # record a child workflow too
    return catalog


def catalog_with_approval(webhook_url: str, suffix: str) -> dict[str, Any]:
    """Billing entity ``acme`` holds invoices above $50; held ones approve themselves
    after 2 hours."""
    catalog = period_catalog(webhook_url, suffix)
    catalog["billing_entities"][0]["approval"] = {
        "total_above_cents": 5000,
        "auto_approve_after_hours": "2",
    }
    return catalog


async def record(
    env: WorkflowEnvironment, harness: PeriodHarness, scenarios: dict[str, Any], force: bool
) -> None:
    for name, scenario in scenarios.items():
        if (HISTORIES / f"{name}.json").exists() and not force:
            print(f"kept {name}.json (recorded by an earlier release; --force records it again)")
            continue
        handle = await scenario(harness)
        await save(handle, name)
        for index, child_id in enumerate(await child_workflow_ids(handle)):
            child = env.client.get_workflow_handle(child_id)
            await child.result()
            await save(child, f"webhook_delivery_{name}_{index}")


async def main(force: bool) -> None:
    HISTORIES.mkdir(parents=True, exist_ok=True)
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(temporal_test_server()),
    )
    await register_search_attributes(env.client)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'billing.db'}"
            upgrade(url)
            engine = make_engine(url)
            async with period_harness(
                env, engine, suffix="", catalog=catalog_with_drafted_webhook
            ) as harness:
                await record(env, harness, SCENARIOS, force)
            async with period_harness(
                env, engine, suffix="-control", catalog=catalog_with_approval
            ) as harness:
                await record(env, harness, CONTROL_SCENARIOS, force)
            engine.dispose()
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main("--force" in sys.argv[1:]))
