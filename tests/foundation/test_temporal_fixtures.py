"""The Temporal fixtures work offline and expose our search attributes."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from workflows import search_attributes


@workflow.defn(sandboxed=False)
class SleepForDaysWorkflow:
    @workflow.run
    async def run(self, days: int) -> str:
        start = workflow.now()
        await workflow.sleep(timedelta(days=days))
        return str(workflow.now() - start)


async def test_time_skipping_env_skips_a_multi_day_timer(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    async with Worker(temporal_env.client, task_queue=task_queue, workflows=[SleepForDaysWorkflow]):
        slept = await temporal_env.client.execute_workflow(
            SleepForDaysWorkflow.run,
            3,
            id=f"sleep-{task_queue}",
            task_queue=task_queue,
        )
    assert slept.startswith("3 days")


@workflow.defn(sandboxed=False)
class UpsertInvoiceStatusWorkflow:
    @workflow.run
    async def run(self) -> str:
        workflow.upsert_search_attributes([search_attributes.INVOICE_STATUS.value_set("draft")])
        return "upserted"


async def test_time_skipping_env_accepts_our_search_attributes(
    temporal_env: WorkflowEnvironment, task_queue: str
) -> None:
    # An unregistered search attribute would fail the workflow task and hang this call.
    async with Worker(
        temporal_env.client, task_queue=task_queue, workflows=[UpsertInvoiceStatusWorkflow]
    ):
        result = await temporal_env.client.execute_workflow(
            UpsertInvoiceStatusWorkflow.run,
            id=f"upsert-{task_queue}",
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=30),
        )
    assert result == "upserted"


async def test_dev_env_has_search_attributes(dev_env: WorkflowEnvironment) -> None:
    listed = await dev_env.client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=dev_env.client.namespace)
    )
    assert {key.name for key in search_attributes.ALL} <= set(listed.custom_attributes)
