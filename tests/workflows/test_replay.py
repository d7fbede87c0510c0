"""Replay saved histories against today's workflow code: the guard for safe upgrades.

Each file in tests/workflows/histories/ is the complete history of a period (or a webhook
delivery) recorded by scripts/record_histories.py. Replaying it runs the current workflow
code over the recorded events; a change that would make a running period take a different
path (a new activity, a removed timer, reordered commands) without ``workflow.patched``
fails here with a non-determinism error before it can reach production. See
docs/UPGRADES.md for what to do when it fails.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from config.settings import Settings
from worker import workflow_runner
from workflows.billing_period import BillingPeriodWorkflow
from workflows.webhook_delivery import WebhookDeliveryWorkflow

HISTORIES = Path(__file__).with_name("histories")
HISTORY_FILES = sorted(HISTORIES.glob("*.json"))
WORKFLOWS = [BillingPeriodWorkflow, WebhookDeliveryWorkflow]


def replayer(sandboxed: bool) -> Replayer:
    """A replayer that runs workflow code as the worker does (``BILLING_WORKFLOW_SANDBOX``)."""
    return Replayer(
        workflows=WORKFLOWS,
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(sandboxed),
    )


def load(path: Path) -> WorkflowHistory:
    events = json.loads(path.read_text())["events"]
    started = events[0]["workflowExecutionStartedEventAttributes"]
    workflow_id = started.get("workflowId") or path.stem
    return WorkflowHistory.from_json(workflow_id, path.read_text())


def workflow_type(path: Path) -> str:
    events = json.loads(path.read_text())["events"]
    return str(events[0]["workflowExecutionStartedEventAttributes"]["workflowType"]["name"])


def test_histories_cover_every_workflow_and_outcome() -> None:
    kinds = {workflow_type(path) for path in HISTORY_FILES}
    assert kinds == {"BillingPeriodWorkflow", "WebhookDeliveryWorkflow"}
    names = {path.stem for path in HISTORY_FILES}
    outcomes = {"billing_period_finalized", "billing_period_closed_empty"}
    outcomes.add("billing_period_malformed_signals")
    # Every shape: before patch "lean-period-shape", with it (prefix "lean_"), with
    # "local-store-steps" (prefix "local_"), with "local-edits-usage-as-received"
    # (prefix "local_edits_") and with "draft-finalizes-when-due" (prefix "when_due_").
    for shape in ("", "lean_", "local_", "local_edits_", "when_due_"):
        assert {f"{shape}{name}" for name in outcomes} <= names, shape
    # Operator control of the grace period: a hold approved, a grace period followed; in
    # the lean shape, with local store steps and with usage checked in its store step.
    # Usage delivered with the start, then undecodable usage payloads: the dynamic signal
    # handler (a run without the newest patch drops what the SDK dropped before).
    for shape in ("local_", "local_edits_", "when_due_"):
        assert f"{shape}billing_period_usage_at_start" in names, shape
    # A grace period of zero ended by the draft's own step: finalized, closed, held.
    at_once = {"billing_period_finalized_at_once", "billing_period_closed_at_once"}
    at_once.add("control_billing_period_held_at_once")
    assert {f"when_due_{name}" for name in at_once} <= names
    control = {"billing_period_held_then_approved", "billing_period_grace_followed"}
    for shape in ("control_", "local_control_", "local_edits_control_", "when_due_control_"):
        assert {f"{shape}{name}" for name in control} <= names, shape
    for path in HISTORY_FILES:
        last = json.loads(path.read_text())["events"][-1]
        assert "workflowExecutionCompletedEventAttributes" in last, f"{path.name} is unfinished"


@pytest.mark.parametrize("path", HISTORY_FILES, ids=[p.stem for p in HISTORY_FILES])
async def test_saved_history_replays_on_current_code(path: Path) -> None:
    result = await replayer(Settings().workflow_sandbox).replay_workflow(
        load(path), raise_on_replay_failure=True
    )
    assert result.replay_failure is None


@pytest.mark.parametrize("sandboxed", [False, True], ids=["unsandboxed", "sandboxed"])
async def test_replay_of_every_history_at_once(sandboxed: bool) -> None:
    """The way CI can run it over many histories: one replayer, all failures reported; under
    both runners, so that either setting of ``BILLING_WORKFLOW_SANDBOX`` is safe to deploy."""

    async def histories() -> AsyncIterator[WorkflowHistory]:
        for path in HISTORY_FILES:
            yield load(path)

    results = await replayer(sandboxed).replay_workflows(histories(), raise_on_replay_failure=False)
    failures = {
        run_id: str(failure) for run_id, failure in results.replay_failures.items() if failure
    }
    assert failures == {}


# A stand-in for an incompatible change: same workflow type, a timer where the recorded
# history has an activity. The replay test must catch it.
@workflow.defn(name="WebhookDeliveryWorkflow", sandboxed=False)
class ChangedWebhookDeliveryWorkflow:
    @workflow.run
    async def run(self, input: object) -> None:
        await workflow.sleep(timedelta(seconds=1))


async def test_an_incompatible_change_fails_the_replay() -> None:
    path = next(p for p in HISTORY_FILES if workflow_type(p) == "WebhookDeliveryWorkflow")
    replayer = Replayer(
        workflows=[ChangedWebhookDeliveryWorkflow], data_converter=pydantic_data_converter
    )
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(load(path))
