"""An operator's request puts its period ahead of any backlog (task priority).

``billing fee edit`` (like every draft change sent through ``BillingClient``) first gives
the period's workflow the operator priority, so its workflow tasks and activities are
handed to workers before a month-end close's. bench/fee_edit.py measures the effect; these
tests pin the mechanism: the priority is set on the running workflow, once in its history,
and only on periods an operator touched.
"""

from __future__ import annotations

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest

from tests.e2e.conftest import Stack
from tests.workflows.test_replay import replayer
from workflows.commands import EDIT_PRIORITY_KEY

SUB, START = "sub_sakura_starter", "2026-09-01"
WORKFLOW_ID = f"billing-period/{SUB}/{START}"


async def _priority_key(stack: Stack, workflow_id: str) -> int:
    described = await stack.client.workflow_service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(
            namespace=stack.client.namespace,
            execution=WorkflowExecution(workflow_id=workflow_id),
        )
    )
    return described.workflow_execution_info.priority.priority_key


async def _options_updates(stack: Stack, workflow_id: str) -> int:
    history = await stack.client.get_workflow_handle(workflow_id).fetch_history()
    return sum(
        1
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_OPTIONS_UPDATED
    )


def _edit(units: str) -> tuple[str, ...]:
    return (
        "fee", "edit", SUB, "--period-start", START,
        "--charge", "api_calls", "--units", units, "--json",
    )  # fmt: skip


async def test_fee_edit_gives_the_period_operator_priority_once(stack: Stack) -> None:
    await stack.ok(
        "period", "start", SUB, "--period-start", START, "--grace-seconds", "3600", "--json"
    )
    await stack.ok("invoice", "show", SUB, "--period-start", START, "--json")
    # started by a launch, not yet touched by an operator: the default priority
    assert await _priority_key(stack, WORKFLOW_ID) == 0

    first = (await stack.ok(*_edit("7"))).json()
    assert await _priority_key(stack, WORKFLOW_ID) == EDIT_PRIORITY_KEY
    second = (await stack.ok(*_edit("8"))).json()
    refreshed = (
        await stack.ok("invoice", "refresh", SUB, "--period-start", START, "--json")
    ).json()

    # the edits took effect as before, and the priority is recorded once, not per request
    assert [f["units"] for f in first["fees"] if f["code"] == "api_calls"] == ["7"]
    assert [f["units"] for f in second["fees"] if f["code"] == "api_calls"] == ["8"]
    assert refreshed["status"] == "draft"
    assert await _options_updates(stack, WORKFLOW_ID) == 1

    # The options event is the server's, not a command: the history still replays.
    history = await stack.client.get_workflow_handle(WORKFLOW_ID).fetch_history()
    await replayer(sandboxed=False).replay_workflow(history)


async def test_edit_of_a_period_never_started_reports_it(stack: Stack) -> None:
    result = await stack.billing(
        "fee", "edit", SUB, "--period-start", "2026-10-01",
        "--charge", "api_calls", "--units", "1",
    )  # fmt: skip
    assert result.code != 0
    assert "Traceback" not in result.stderr
    assert "not running" in result.stderr.lower() or "no billing period" in result.stderr.lower()
