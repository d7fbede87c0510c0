"""A cached run keeps no workflow activation alive (config.lean_runner, bench/README.md)."""

from __future__ import annotations

import gc
import uuid
from datetime import timedelta

from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    Replayer,
    UnsandboxedWorkflowRunner,
    Worker,
    WorkflowInstance,
    WorkflowInstanceDetails,
)

from config.lean_runner import LeanUnsandboxedWorkflowRunner, detached
from worker import workflow_runner


@workflow.defn
class WaitsForARelease:
    def __init__(self) -> None:
        self.released = False

    @workflow.run
    async def run(self, name: str) -> str:
        await workflow.sleep(timedelta(milliseconds=1))  # a second activation
        await workflow.wait_condition(lambda: self.released)
        return f"{name}: {workflow.info().raw_memo['note'].data.decode()}"

    @workflow.signal
    def release(self) -> None:
        self.released = True

    @workflow.query
    def waiting(self) -> bool:
        return not self.released


@workflow.defn
class SleepsAtRandom:
    @workflow.run
    async def run(self) -> list[float]:
        drawn = []
        for _ in range(20):  # which of them sleep is the run's random sequence
            drawn.append(workflow.random().random())
            if drawn[-1] < 0.5:
                await workflow.sleep(timedelta(milliseconds=1))
        return drawn


class _Recording(LeanUnsandboxedWorkflowRunner):
    def __init__(self) -> None:
        self.instances: list[WorkflowInstance] = []

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        instance = super().create_instance(det)
        self.instances.append(instance)
        return instance


def _live_activations(run_ids: set[str]) -> int:
    """Activations of these runs still alive (other tests' workers may hold their own)."""
    gc.collect()
    return sum(isinstance(o, WorkflowActivation) and o.run_id in run_ids for o in gc.get_objects())


def test_a_detached_message_is_an_equal_copy() -> None:
    original = Payload(metadata={"encoding": b"json/plain"}, data=b'"x"')

    copy = detached(original)

    assert copy == original and copy is not original


def test_the_worker_runs_unsandboxed_workflows_with_the_lean_runner() -> None:
    assert isinstance(workflow_runner(False), LeanUnsandboxedWorkflowRunner)


async def test_cached_runs_keep_no_activation_alive(temporal_env: WorkflowEnvironment) -> None:
    runner = _Recording()
    task_queue = f"lean-{uuid.uuid4()}"
    async with Worker(
        temporal_env.client,
        task_queue=task_queue,
        workflows=[WaitsForARelease],
        workflow_runner=runner,
    ):
        handles = [
            await temporal_env.client.start_workflow(
                WaitsForARelease.run,
                f"period {i}",
                id=f"lean-{uuid.uuid4()}",
                task_queue=task_queue,
                memo={"note": "kept"},
            )
            for i in range(3)
        ]
        for handle in handles:
            assert await handle.query(WaitsForARelease.waiting)

        # Three runs cached and waiting; the worker's poll loop holds the last activation
        # it polled (one per worker), the runs hold copies of what they read.
        assert _live_activations({h.result_run_id or "" for h in handles}) <= 1
        assert [i.get_info().raw_memo["note"].data for i in runner.instances] == [b'"kept"'] * 3

        for handle in handles:
            await handle.signal(WaitsForARelease.release)
        assert [await h.result() for h in handles] == [f'period {i}: "kept"' for i in range(3)]


async def test_a_run_draws_the_random_numbers_the_sdk_would(
    temporal_env: WorkflowEnvironment,
) -> None:
    runner = _Recording()
    task_queue = f"lean-{uuid.uuid4()}"
    async with Worker(
        temporal_env.client,
        task_queue=task_queue,
        workflows=[SleepsAtRandom, WaitsForARelease],
        workflow_runner=runner,
    ):
        handle = await temporal_env.client.start_workflow(
            SleepsAtRandom.run, id=f"lean-{uuid.uuid4()}", task_queue=task_queue
        )
        drawn = await handle.result()
        waiting = await temporal_env.client.start_workflow(
            WaitsForARelease.run,
            "idle",
            id=f"lean-{uuid.uuid4()}",
            task_queue=task_queue,
            memo={"note": "none"},
        )
        assert await waiting.query(WaitsForARelease.waiting)
        await waiting.signal(WaitsForARelease.release)
        await waiting.result()

    assert 0 < sum(d < 0.5 for d in drawn) < 20
    # A run that never asks for randomness never makes its generator.
    assert runner.instances[-1]._random is None  # type: ignore[attr-defined]
    # The SDK's own runner replays the same timers from the same seed.
    history = await handle.fetch_history()
    await Replayer(
        workflows=[SleepsAtRandom], workflow_runner=UnsandboxedWorkflowRunner()
    ).replay_workflow(history)
