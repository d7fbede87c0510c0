"""Bad input sent to a live billing period, as signals AND as updates, on the
time-skipping server: every one gets a clear error or a recorded rejection, no workflow
task ever fails, and the store is unchanged (usage rows, invoices, fees, adjustments).

One draft period (``sub_pro``, January 2026) serves every case of the module: a case only
ever sends input that must be refused, so the period stays a draft with one seed event.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from tests.fixtures.periods import PeriodHarness, workflow_task_failures
from tests.reliability.support import module_harness, snapshot, until
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import MAX_USAGE_BATCH, AddUsage, PeriodPhase, PeriodView, RefreshInvoice

pytestmark = [pytest.mark.fault]

JAN = "2026-01-10T12:00:00Z"
SUB = "sub_pro"


class Period:
    def __init__(self, harness: PeriodHarness, handle: WorkflowHandle[Any, Any]) -> None:
        self.harness = harness
        self.handle = harness.latest(handle)
        self.sub = harness.sub(SUB)

    def ev(self, **overrides: Any) -> dict[str, Any]:
        event: dict[str, Any] = {
            "transaction_id": "tx-bad",
            "external_subscription_id": self.sub,
            "code": "api_calls",
            "timestamp": JAN,
            "properties": {},
        }
        event.update(overrides)
        return {k: v for k, v in event.items() if v is not _DROP}

    async def view(self) -> PeriodView:
        return await self.harness.view(self.handle)


_DROP = object()


@pytest_asyncio.fixture(scope="module")
async def period(
    temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Period]:
    async with module_harness(temporal_env, tmp_path_factory.mktemp("bad-input")) as harness:
        handle = await harness.start(SUB)
        await harness.wait_for_draft(handle)
        seed = harness.event("seed-1", "api_calls", datetime(2026, 1, 5, tzinfo=UTC))
        receipt = await handle.execute_update(
            BillingPeriodWorkflow.add_usage_sync, AddUsage(events=[seed])
        )
        assert receipt.accepted == 1
        draft = await handle.execute_update(
            BillingPeriodWorkflow.refresh_invoice_sync, RefreshInvoice()
        )
        assert [f.code for f in draft.fees] == ["subscription", "api_calls"]
        yield Period(harness, handle)
        # The shared period is still a clean draft and its history has no task failure.
        assert (await harness.view(handle)).phase == PeriodPhase.DRAFT
        assert await workflow_task_failures(handle) == []


# --------------------------------------------------------------------------- cases
# Each case: (signal name, payload builder, expectation, substring of the reason).
# Expectations: "malformed" (refused before it reaches the store), "refused" (a clear
# business refusal), "event" (the batch is read, each bad event is rejected with a reason),
# "duplicate" (already counted: not counted again).

MALFORMED, REFUSED, EVENT, DUPLICATE = "malformed", "refused", "event", "duplicate"


def usage(*events: dict[str, Any]) -> dict[str, Any]:
    return {"events": list(events)}


CASES: list[Any] = [
    # add_usage: the batch shape
    ("add_usage", lambda p: {"events": "not a list"}, MALFORMED, "events"),
    ("add_usage", lambda p: {"events": []}, MALFORMED, "events"),
    ("add_usage", lambda p: {}, MALFORMED, "events"),
    ("add_usage", lambda p: {"events": [p.ev()], "extra": 1}, MALFORMED, "extra"),
    ("add_usage", lambda p: [p.ev()], MALFORMED, ""),
    ("add_usage", lambda p: "events", MALFORMED, ""),
    ("add_usage", lambda p: 42, MALFORMED, ""),
    (
        "add_usage",
        lambda p: usage(*[p.ev(transaction_id=f"big-{i}") for i in range(MAX_USAGE_BATCH + 1)]),
        MALFORMED,
        "events",
    ),
    # add_usage: one event's fields, wrongly typed or out of bounds
    ("add_usage", lambda p: usage(p.ev(transaction_id=_DROP)), MALFORMED, "transaction_id"),
    ("add_usage", lambda p: usage(p.ev(transaction_id="")), MALFORMED, "transaction_id"),
    ("add_usage", lambda p: usage(p.ev(transaction_id="x" * 201)), MALFORMED, "transaction_id"),
    ("add_usage", lambda p: usage(p.ev(transaction_id=7)), MALFORMED, "transaction_id"),
    ("add_usage", lambda p: usage(p.ev(code="")), MALFORMED, "code"),
    ("add_usage", lambda p: usage(p.ev(code="c" * 101)), MALFORMED, "code"),
    ("add_usage", lambda p: usage(p.ev(code=None)), MALFORMED, "code"),
    ("add_usage", lambda p: usage(p.ev(external_subscription_id="")), MALFORMED, "subscription"),
    ("add_usage", lambda p: usage(p.ev(timestamp="yesterday")), MALFORMED, "timestamp"),
    ("add_usage", lambda p: usage(p.ev(timestamp="2026-01-10T12:00:00")), MALFORMED, "timestamp"),
    ("add_usage", lambda p: usage(p.ev(timestamp=None)), MALFORMED, "timestamp"),
    ("add_usage", lambda p: usage(p.ev(timestamp="2026-13-45T99:00:00Z")), MALFORMED, "timestamp"),
    ("add_usage", lambda p: usage(p.ev(properties=[1, 2])), MALFORMED, "properties"),
    ("add_usage", lambda p: usage(p.ev(properties="gb=1")), MALFORMED, "properties"),
    ("add_usage", lambda p: usage(p.ev(unexpected=True)), MALFORMED, "unexpected"),
    ("add_usage", lambda p: usage("not an event"), MALFORMED, "events"),
    # add_usage: well formed, but each event is refused with its reason
    ("add_usage", lambda p: usage(p.ev(code="no_such_metric")), EVENT, "unknown metric code"),
    ("add_usage", lambda p: usage(p.ev(timestamp="9999-06-15T00:00:00Z")), EVENT, "outside"),
    ("add_usage", lambda p: usage(p.ev(timestamp="2025-12-31T23:59:59Z")), EVENT, "outside"),
    ("add_usage", lambda p: usage(p.ev(timestamp="2026-02-01T00:00:00Z")), EVENT, "outside"),
    ("add_usage", lambda p: usage(p.ev(timestamp="1970-01-01T00:00:00Z")), EVENT, "outside"),
    (
        "add_usage",
        lambda p: usage(p.ev(external_subscription_id="sub_of_someone_else")),
        EVENT,
        "was sent to subscription",
    ),
    ("add_usage", lambda p: usage(p.ev(code="storage_gb")), EVENT, "missing property"),
    (
        "add_usage",
        lambda p: usage(p.ev(code="storage_gb", properties={"gb": "NaN"})),
        EVENT,
        "not a",
    ),
    (
        "add_usage",
        lambda p: usage(p.ev(code="storage_gb", properties={"gb": "Infinity"})),
        EVENT,
        "not a",
    ),
    (
        "add_usage",
        lambda p: usage(p.ev(code="storage_gb", properties={"gb": "-Infinity"})),
        EVENT,
        "not a",
    ),
    (
        "add_usage",
        lambda p: usage(p.ev(code="storage_gb", properties={"gb": "twelve"})),
        EVENT,
        "not a number",
    ),
    (
        "add_usage",
        lambda p: usage(p.ev(code="storage_gb", properties={"gb": True})),
        EVENT,
        "not a number",
    ),
    (
        "add_usage",
        lambda p: usage(p.ev(code="storage_gb", properties={"gb": {"nested": 1}})),
        EVENT,
        "not a number",
    ),
    (
        "add_usage",
        lambda p: usage(p.ev(code="seats", properties={"seats": [1, 2]})),
        EVENT,
        "not a number",
    ),
    # add_usage: JSON's non-standard NaN / Infinity floats (the converter lets them through)
    (
        "add_usage",
        lambda p: usage(p.ev(code="storage_gb", properties={"gb": float("nan")})),
        MALFORMED,
        "finite",
    ),
    (
        "add_usage",
        lambda p: usage(p.ev(code="storage_gb", properties={"gb": float("inf")})),
        MALFORMED,
        "finite",
    ),
    # duplicate transaction id of the accepted seed event
    ("add_usage", lambda p: usage(p.ev(transaction_id="seed-1")), DUPLICATE, ""),
    # edit_fee
    (
        "edit_fee",
        lambda p: {"charge_code": "seats", "mode": "units", "units": "-5"},
        MALFORMED,
        "units",
    ),
    (
        "edit_fee",
        lambda p: {"charge_code": "seats", "mode": "units", "units": "NaN"},
        MALFORMED,
        "units",
    ),
    (
        "edit_fee",
        lambda p: {"charge_code": "seats", "mode": "units", "units": "Infinity"},
        MALFORMED,
        "units",
    ),
    (
        "edit_fee",
        lambda p: {"charge_code": "seats", "mode": "units", "units": "1e400"},
        MALFORMED,
        "units",
    ),
    (
        "edit_fee",
        lambda p: {"charge_code": "seats", "mode": "units", "units": "9" * 40},
        MALFORMED,
        "units",
    ),
    (
        "edit_fee",
        lambda p: {"charge_code": "seats", "mode": "units", "units": "lots"},
        MALFORMED,
        "units",
    ),
    (
        "edit_fee",
        lambda p: {"charge_code": "seats", "mode": "units", "units": [1]},
        MALFORMED,
        "units",
    ),
    (
        "edit_fee",
        lambda p: {"charge_code": "seats", "mode": "teleport", "units": "1"},
        MALFORMED,
        "mode",
    ),
    ("edit_fee", lambda p: {"mode": "units", "units": "1"}, MALFORMED, "charge_code"),
    (
        "edit_fee",
        lambda p: {"charge_code": "", "mode": "units", "units": "1"},
        MALFORMED,
        "charge_code",
    ),
    (
        "edit_fee",
        lambda p: {"charge_code": "seats", "mode": "amount", "units": "1", "unit_amount": "-0.01"},
        MALFORMED,
        "unit_amount",
    ),
    (
        "edit_fee",
        lambda p: {"charge_code": "seats", "mode": "display_name", "display_name": ""},
        MALFORMED,
        "display_name",
    ),
    (
        "edit_fee",
        lambda p: {"charge_code": "seats", "mode": "display_name", "display_name": "n" * 256},
        MALFORMED,
        "display_name",
    ),
    (
        "edit_fee",
        lambda p: {"charge_code": "seats", "mode": "units", "units": "1", "sneaky": "x"},
        MALFORMED,
        "sneaky",
    ),
    (
        "edit_fee",
        lambda p: {"charge_code": "gpu_hours", "mode": "units", "units": "1"},
        REFUSED,
        "not part of this subscription's plan",
    ),
    # remove_fee_adjustment
    ("remove_fee_adjustment", lambda p: {"charge_code": ""}, MALFORMED, "charge_code"),
    ("remove_fee_adjustment", lambda p: {"charge_code": 12}, MALFORMED, "charge_code"),
    ("remove_fee_adjustment", lambda p: {}, MALFORMED, "charge_code"),
    (
        "remove_fee_adjustment",
        lambda p: {"charge_code": "gpu_hours"},
        REFUSED,
        "not part of this subscription's plan",
    ),
    # refresh_invoice and finalize_invoice: malformed payloads must not refresh or finalize
    ("refresh_invoice", lambda p: {"reason": {"why": "x"}}, MALFORMED, "reason"),
    ("refresh_invoice", lambda p: {"force": True}, MALFORMED, "force"),
    ("finalize_invoice", lambda p: {"reason": ["now"]}, MALFORMED, "reason"),
    ("finalize_invoice", lambda p: {"reason": 5}, MALFORMED, "reason"),
    ("finalize_invoice", lambda p: {"now": True}, MALFORMED, "now"),
    ("finalize_invoice", lambda p: "finalize!", MALFORMED, ""),
]


CASE_IDS = [
    f"{i:02d}-{c[0]}-{c[2]}-{c[3] or 'shape'}".replace(" ", "_") for i, c in enumerate(CASES)
]


async def _send_signal(period: Period, name: str, payload: Any) -> list[str]:
    """Signal and wait for its rejection; returns the new rejection reasons."""
    before = (await period.view()).inputs_rejected
    await period.handle.signal(name, payload)
    view = await until(
        period.view,
        lambda v: v.inputs_rejected > before,
        timeout=20,
        what=f"rejection of {name}",
    )
    rejections = await period.handle.query(BillingPeriodWorkflow.rejections)
    new = view.inputs_rejected - before
    return [r.reason for r in rejections[-new:]]


async def _expect(
    period: Period, via: str, name: str, payload: Any, expect: str, hint: str
) -> None:
    harness = period.harness
    before = snapshot(harness.engine)
    if via == "signal":
        if expect == DUPLICATE:
            duplicated = (await period.view()).events_duplicated
            await period.handle.signal(name, payload)
            await until(
                period.view, lambda v: v.events_duplicated > duplicated, timeout=20, what="dup"
            )
        else:
            reasons = await _send_signal(period, name, payload)
            joined = " | ".join(reasons)
            if expect == MALFORMED:
                assert f"malformed {name} payload" in joined, joined
            assert hint in joined, joined
    else:
        update = f"{name}_sync"
        if expect in (MALFORMED, REFUSED):
            with pytest.raises(WorkflowUpdateFailedError) as failed:
                await period.handle.execute_update(update, payload)
            cause = failed.value.cause
            message = f"{cause} {getattr(cause, 'cause', '')}"
            assert message.strip(), "an update refusal must say why"
            if expect == REFUSED:
                assert hint in message, message
        else:
            receipt = await period.handle.execute_update(update, payload, result_type=dict)
            assert receipt["accepted"] == 0, receipt
            if expect == DUPLICATE:
                assert receipt["duplicates"] == 1, receipt
            else:
                reasons = " | ".join(r["reason"] for r in receipt["rejected"])
                assert len(receipt["rejected"]) == 1 and hint in reasons, receipt
    assert snapshot(harness.engine) == before
    assert (await period.view()).phase == PeriodPhase.DRAFT


@pytest.mark.parametrize("via", ["signal", "update"])
@pytest.mark.parametrize(("name", "build", "expect", "hint"), CASES, ids=CASE_IDS)
async def test_bad_input_is_refused_and_changes_nothing(
    period: Period, via: str, name: str, build: Any, expect: str, hint: str
) -> None:
    await _expect(period, via, name, build(period), expect, hint)


async def test_unknown_signal_and_update_names(period: Period) -> None:
    reasons = await _send_signal(period, "delete_everything", {"all": True})
    assert reasons == ["unknown signal 'delete_everything'"]
    with pytest.raises(WorkflowUpdateFailedError):
        await period.handle.execute_update("delete_everything_sync", {"all": True})


async def test_signal_with_several_arguments_is_recorded(period: Period) -> None:
    before = (await period.view()).inputs_rejected
    await period.handle.signal("edit_fee", args=[{"charge_code": "seats"}, "second"])
    await until(period.view, lambda v: v.inputs_rejected == before + 1, timeout=20, what="reject")
    rejections = await period.handle.query(BillingPeriodWorkflow.rejections)
    assert "expected one argument, got 2" in rejections[-1].reason


async def test_null_signal_payload_is_recorded(period: Period) -> None:
    reasons = await _send_signal(period, "add_usage", None)
    assert "malformed add_usage payload" in reasons[-1]


async def test_null_update_payload_is_refused(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with module_harness(temporal_env, tmp_path) as harness:
        handle = harness.latest(await harness.start("sub_inherit_true"))
        await harness.wait_for_draft(handle)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("add_usage_sync", None)
        assert await workflow_task_failures(handle) == []


async def test_event_in_december_9999_is_rejected(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """An event whose own billing period would end past year 9999: refused with a reason
    that says so, and neither a usage row nor the draft changes."""
    async with module_harness(temporal_env, tmp_path) as harness:
        handle = harness.latest(await harness.start("sub_inherit_true"))
        draft = await harness.wait_for_draft(handle)
        stored = snapshot(harness.engine)
        event = harness.event(
            "far-future",
            "api_calls",
            datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
            sub="sub_inherit_true",
        )
        await handle.signal("add_usage", AddUsage(events=[event]))
        view = await until(
            lambda: harness.view(handle),
            lambda v: v.inputs_rejected >= 1,
            timeout=8,
            what="rejection of the December 9999 event",
        )
        rejections = await handle.query(BillingPeriodWorkflow.rejections)
        assert [(r.kind, r.reason) for r in rejections] == [
            (
                "add_usage",
                "event far-future: timestamp 9999-12-31T23:59:00Z is outside the period "
                "2026-01-01..2026-01-31; it is too far from any billing period to be billed",
            )
        ]
        assert view.inputs_rejected == 1
        assert view.events_accepted == draft.events_accepted == 0
        assert view.invoice == draft.invoice
        assert snapshot(harness.engine) == stored
        with harness.engine.connect() as connection:
            usage_rows = connection.execute(
                text("SELECT count(*) FROM usage_events WHERE transaction_id = 'far-future'")
            ).scalar_one()
        assert usage_rows == 0


# --------------------------------------------------------------------------- hypothesis

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "events",
        "transaction_id",
        "code",
        "timestamp",
        "properties",
        "charge_code",
        "mode",
        "units",
        "unit_amount",
        "display_name",
        "reason",
        "external_subscription_id",
    ]
)
payloads = (
    json_values
    | st.dictionaries(field_names, json_values, max_size=5)
    | st.builds(
        lambda events: {"events": events},
        st.lists(st.dictionaries(field_names, json_values, max_size=5), min_size=0, max_size=3),
    )
)
names = st.sampled_from(
    ["add_usage", "edit_fee", "remove_fee_adjustment", "refresh_invoice", "finalize_invoice"]
)


def _could_be_valid(name: str, payload: Any) -> bool:
    """Random payloads that happen to be valid mutations would change the draft."""
    from workflows.messages import EditFee, FinalizeInvoice, RefreshInvoice, RemoveFeeAdjustment

    model = {
        "add_usage": AddUsage,
        "edit_fee": EditFee,
        "remove_fee_adjustment": RemoveFeeAdjustment,
        "refresh_invoice": RefreshInvoice,
        "finalize_invoice": FinalizeInvoice,
    }[name]
    try:
        model.model_validate(json.loads(json.dumps(payload)))
    except Exception:
        return False
    return True


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=names, payload=payloads, as_update=st.booleans())
async def test_hypothesis_payloads_never_fail_a_task(
    period: Period, name: str, payload: Any, as_update: bool
) -> None:
    if _could_be_valid(name, payload):
        return
    before = snapshot(period.harness.engine)
    if as_update:
        with pytest.raises(WorkflowUpdateFailedError):
            await period.handle.execute_update(f"{name}_sync", payload)
    else:
        await _send_signal(period, name, payload)
    assert snapshot(period.harness.engine) == before
