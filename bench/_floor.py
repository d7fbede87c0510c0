"""The orchestration floor: a do-nothing period with the history shape of a billing period.

Started like a billing period (signal-with-start carrying the usage, the search
attributes given at start), it records the same events: the SDK's patch marker and its
``TemporalChangeVersion`` upsert, the store steps ``record_usage`` (once per usage batch),
``draft_invoice`` and ``finalize_invoice`` as local activities, the grace timer, the
activity ``deliver_webhook``, and the same two search-attribute upserts (status draft,
status finalized). Every step returns at once: what remains is the cost of Temporal itself
(server, SDK, serialisation). ``bench/_shape.py`` prints both histories side by side;
``tests/workflows/test_period_shape.py`` says what the shape is.

With ``{"regular_store_steps": true}`` the store steps are regular activities: the floor
of the lean shape before patch ``local-store-steps``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from workflows.search_attributes import INVOICE_STATUS as STATUS

# A patch consulted first thing, as the billing period consults "local-store-steps".
FLOOR_PATCH = "floor-shape"


def _noop(name: str) -> Any:
    @activity.defn(name=name)
    def step(payload: dict[str, Any]) -> dict[str, Any]:
        return {"step": name, "ok": True}

    return step


# The billing period's activity names, so that both histories read the same.
FLOOR_ACTIVITIES = [_noop(name) for name in ("record_usage", "draft_invoice", "finalize_invoice")]


def make_done_activity(on_done: Callable[[str, float], None]) -> Any:
    """The last step, ``deliver_webhook``: tells the bench when the period is over (like
    the webhook receiver does for a billing period)."""

    @activity.defn(name="deliver_webhook")
    def deliver_webhook(payload: dict[str, Any]) -> dict[str, Any]:
        on_done(str(payload["id"]), time.monotonic())
        return {"ok": True}

    return deliver_webhook


@workflow.defn(name="FloorPeriod")
class FloorPeriod:
    def __init__(self) -> None:
        self._usage: list[Any] = []

    @workflow.signal(name="add_usage")
    def add_usage(self, payload: Any) -> None:
        self._usage.append(payload)

    @workflow.run
    async def run(self, input: dict[str, Any]) -> int:
        workflow.patched(FLOOR_PATCH)
        options: dict[str, Any] = {"start_to_close_timeout": timedelta(seconds=60)}
        store_step = (
            workflow.execute_activity
            if input.get("regular_store_steps", False)
            else workflow.execute_local_activity
        )
        await workflow.wait_condition(lambda: bool(self._usage))
        await store_step("record_usage", {"usage": self._usage}, **options)
        await store_step("draft_invoice", {}, **options)
        workflow.upsert_search_attributes([STATUS.value_set("draft")])
        await workflow.sleep(timedelta(seconds=input["grace_seconds"]))
        await store_step("finalize_invoice", {}, **options)
        workflow.upsert_search_attributes([STATUS.value_set("finalized")])
        await workflow.execute_activity(
            "deliver_webhook", {"id": workflow.info().workflow_id}, **options
        )
        return len(self._usage)
