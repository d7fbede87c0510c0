"""Print the history shape (event counts by type) of one billing period and one floor period.

.venv/bin/python bench/_shape.py
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from _floor import FLOOR_ACTIVITIES, FloorPeriod, make_done_activity
from _stack import DEFAULT_URL, SECRET, dev_server, fresh_schema, load_bench_catalog
from close import JANUARY, usage_events
from temporalio.client import Client
from temporalio.worker import Worker

from starter.periods import period_workflow_id
from starter.webhook_sink import WebhookSink
from worker import ACTIVITY_THREADS, build_worker
from workflows import search_attributes
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import AddUsage, BillingPeriodInput


async def shape(client: Client, workflow_id: str) -> dict[str, Any]:
    """Events by type, bytes, the activity types in order and the upserts of our keys."""
    counts: collections.Counter[str] = collections.Counter()
    activities: list[str] = []
    upserts = 0
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        kind = event.WhichOneof("attributes").removesuffix("_event_attributes")
        counts[kind] += 1
        counts["bytes"] += event.ByteSize()
        if kind == "activity_task_scheduled":
            activities.append(event.activity_task_scheduled_event_attributes.activity_type.name)
        elif kind == "upsert_workflow_search_attributes":
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            # The SDK's TemporalChangeVersion upsert beside a patch marker is counted apart.
            if set(fields.indexed_fields) != {"TemporalChangeVersion"}:
                upserts += 1
    return {"events": dict(counts), "activities": activities, "billing_upserts": upserts}


async def main() -> None:
    with fresh_schema(os.environ.get("BILLING_TEST_POSTGRES_URL", DEFAULT_URL), "shape") as url:
        async with WebhookSink(secret=SECRET) as sink:
            engine = load_bench_catalog(url, ["sub_0"], sink.url)
            async with dev_server() as client:
                with ThreadPoolExecutor(ACTIVITY_THREADS) as executor:
                    async with httpx.AsyncClient() as http:
                        worker = build_worker(
                            client, engine, http, task_queue="q", executor=executor
                        )
                        floor = Worker(
                            client,
                            task_queue="f",
                            workflows=[FloorPeriod],
                            activities=[*FLOOR_ACTIVITIES, make_done_activity(lambda *_: None)],
                            activity_executor=executor,
                        )
                        async with worker, floor:
                            usage = AddUsage(events=usage_events("sub_0", JANUARY[0], 3))
                            period = BillingPeriodInput(
                                subscription_external_id="sub_0",
                                period_start=JANUARY[0],
                                period_end=JANUARY[1],
                                grace_period_seconds=1,
                                refresh_debounce_seconds=0,
                            )
                            # Both started as close.py starts them (starter.periods' attributes).
                            attributes = search_attributes.at_start(period)
                            handle = await client.start_workflow(
                                BillingPeriodWorkflow.run,
                                period,
                                id=period_workflow_id("sub_0", JANUARY[0]),
                                task_queue="q",
                                start_signal="add_usage",
                                start_signal_args=[usage],
                                search_attributes=attributes,
                            )
                            await handle.result()
                            floor_handle = await client.start_workflow(
                                "FloorPeriod",
                                {"grace_seconds": 1},
                                id="floor",
                                task_queue="f",
                                start_signal="add_usage",
                                start_signal_args=[usage],
                                search_attributes=attributes,
                            )
                            await floor_handle.result()
                            await asyncio.sleep(2)
                            print("period", await shape(client, handle.id))
                            print("floor ", await shape(client, "floor"))
                            async for wf in client.list_workflows():
                                print(" ", wf.workflow_type, wf.id, wf.status)
            engine.dispose()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
