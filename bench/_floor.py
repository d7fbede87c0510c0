"""The orchestration floor: a do-nothing period with the same shape as a billing period.

Started with the same usage signal and its search attributes, it runs the same activities
as a period of the lean shape (record usage, draft invoice, finalize, deliver webhook), one
timer (the grace period) and the same two search-attribute upserts (draft, finalized), but
every activity returns at once: what remains is the cost of Temporal itself (server, SDK,
serialisation).

Like the billing period, it runs all four as regular activities. With
``{"local_store_steps": true}`` the two store steps other than recording usage are local
activities: the reference for the local-activity experiment in bench/README.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from workflows.search_attributes import INVOICE_STATUS as STATUS

STEPS_BEFORE_GRACE = ("record_usage", "draft_invoice")
STEPS_AFTER_GRACE = ("finalize", "deliver_webhook")


@activity.defn(name="floor_noop")
def floor_noop(payload: dict[str, Any]) -> dict[str, Any]:
    return {"step": payload.get("step"), "ok": True}


def make_done_activity(on_done: Callable[[str, float], None]) -> Any:
    """The last step: tells the bench when the period is over (like the webhook sink)."""

    @activity.defn(name="floor_done")
    def floor_done(payload: dict[str, Any]) -> dict[str, Any]:
        on_done(str(payload["id"]), time.monotonic())
        return {"ok": True}

    return floor_done


@workflow.defn(name="FloorPeriod")
class FloorPeriod:
    def __init__(self) -> None:
        self._usage: list[Any] = []

    @workflow.signal(name="add_usage")
    def add_usage(self, payload: Any) -> None:
        self._usage.append(payload)

    @workflow.run
    async def run(self, input: dict[str, Any]) -> int:
        options: dict[str, Any] = {"start_to_close_timeout": timedelta(seconds=60)}
        store_step = (
            workflow.execute_local_activity
            if input.get("local_store_steps", False)
            else workflow.execute_activity
        )
        for step in STEPS_BEFORE_GRACE:
            payload: dict[str, Any] = {"step": step}
            if step == "record_usage":
                await workflow.wait_condition(lambda: bool(self._usage))
                payload["usage"] = self._usage
            step_runner = workflow.execute_activity if step == "record_usage" else store_step
            await step_runner("floor_noop", payload, **options)
        workflow.upsert_search_attributes([STATUS.value_set("draft")])
        await workflow.sleep(timedelta(seconds=input["grace_seconds"]))
        await store_step("floor_noop", {"step": STEPS_AFTER_GRACE[0]}, **options)
        workflow.upsert_search_attributes([STATUS.value_set("finalized")])
        await workflow.execute_activity(
            "floor_done", {"id": workflow.info().workflow_id}, **options
        )
        return len(self._usage)
