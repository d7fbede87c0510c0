"""The worker's throughput settings do what they claim (bench/README.md has the figures)."""

from __future__ import annotations

import gc
import importlib
import sys
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine
from temporalio.client import Client
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

import workflows.billing_period
from config.settings import Settings
from worker import (
    ACTIVITY_THREADS,
    activity_slots,
    build_worker,
    share_workflow_code,
    tune_garbage_collection,
)


def import_afresh(name: str) -> ModuleType:
    """Import a module again under its own name, as the sandbox does for every run."""
    loaded = sys.modules.pop(name)
    try:
        return importlib.import_module(name)
    finally:
        sys.modules[name] = loaded


def test_runs_of_a_workflow_share_its_code_but_not_its_globals() -> None:
    share_workflow_code()

    first = import_afresh("workflows.billing_period")
    second = import_afresh("workflows.billing_period")

    assert first is not second and first.__dict__ is not second.__dict__
    assert first.BillingPeriodWorkflow is not second.BillingPeriodWorkflow
    # One compiled copy of the workflow's code, however many periods are loaded.
    run_first = first.BillingPeriodWorkflow.run.__code__
    assert run_first is second.BillingPeriodWorkflow.run.__code__
    assert first.__spec__.origin == workflows.billing_period.__file__


def test_sharing_is_installed_once_per_process() -> None:
    share_workflow_code()
    share_workflow_code()

    finders = [f for f in sys.meta_path if type(f).__name__ == "_SharedCodeFinder"]
    assert len(finders) == 1


def test_start_up_objects_are_frozen_out_of_garbage_collection() -> None:
    try:
        tune_garbage_collection()
        assert gc.get_freeze_count() > 0  # no longer walked by full collections
    finally:
        gc.unfreeze()


def _worker(client: Client, threads: int = ACTIVITY_THREADS, **options: Any) -> Worker:
    with ThreadPoolExecutor(max_workers=threads) as executor:
        return build_worker(
            client,
            create_engine("sqlite://"),
            httpx.AsyncClient(),
            task_queue=f"tuning-{uuid.uuid4()}",  # one worker per task queue and process
            executor=executor,
            **options,
        )


async def test_the_worker_runs_workflows_unsandboxed_by_default(
    temporal_env: WorkflowEnvironment,
) -> None:
    worker = _worker(temporal_env.client)

    assert Settings.model_fields["workflow_sandbox"].default is False
    assert isinstance(worker.config()["workflow_runner"], UnsandboxedWorkflowRunner)


async def test_the_sandbox_setting_passes_the_helper_modules_through(
    temporal_env: WorkflowEnvironment,
) -> None:
    runner = _worker(temporal_env.client, workflow_sandbox=True).config()["workflow_runner"]

    assert isinstance(runner, SandboxedWorkflowRunner)
    passed = runner.restrictions.passthrough_modules
    assert {"workflows.inbox", "workflows.commands", "billing"} <= passed
    assert not {"workflows", "workflows.billing_period"} & passed  # loaded per run


async def test_every_run_shares_one_payload_converter(temporal_env: WorkflowEnvironment) -> None:
    converter = _worker(temporal_env.client).client.data_converter

    assert converter.payload_converter_class() is converter.payload_converter_class()
    assert isinstance(converter.payload_converter_class(), PydanticPayloadConverter)


async def test_the_worker_takes_few_workflow_tasks_at_once(
    temporal_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The backlog of a close must wait on the server, where an operator's tasks go first.
    assert _worker(temporal_env.client).config()["max_concurrent_workflow_tasks"] == 4
    monkeypatch.setenv("BILLING_WORKFLOW_TASK_SLOTS", "6")
    slots = Settings().workflow_task_slots
    config = _worker(temporal_env.client, workflow_task_slots=slots).config()
    assert config["max_concurrent_workflow_tasks"] == 6
    # Each workflow task may run one local activity, sure of one of the 16 threads.
    assert config["max_concurrent_local_activities"] == 6
    assert config["max_concurrent_activities"] == 16 - 6
    for refused in ("1", "9"):  # the SDK needs 2 (sticky + normal); 8 leaves 8 threads
        monkeypatch.setenv("BILLING_WORKFLOW_TASK_SLOTS", refused)
        with pytest.raises(ValidationError, match="BILLING_WORKFLOW_TASK_SLOTS"):
            Settings()


async def test_the_activity_slots_follow_the_executors_size(
    temporal_env: WorkflowEnvironment,
) -> None:
    # Local activities keep one thread per workflow-task slot; the rest serve regular
    # activities, so the SDK never queues an activity behind busy threads (nor warns).
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the SDK's "max_workers is only ..." warning
        for threads, slots in ((5, 4), (8, 4), (ACTIVITY_THREADS, 6)):
            config = _worker(temporal_env.client, threads, workflow_task_slots=slots).config()
            assert config["max_concurrent_local_activities"] == slots
            assert config["max_concurrent_activities"] == threads - slots


def test_an_executor_without_a_thread_for_regular_activities_is_refused() -> None:
    for threads in (1, 4):
        with (
            ThreadPoolExecutor(max_workers=threads) as executor,
            pytest.raises(ValueError, match=f"has {threads} thread.* at least 5"),
        ):
            activity_slots(executor, 4)
    with ThreadPoolExecutor(max_workers=5) as executor:
        assert activity_slots(executor, 4) == (1, 4)


async def test_build_worker_refuses_a_small_executor(temporal_env: WorkflowEnvironment) -> None:
    with pytest.raises(ValueError, match="at least 5: one per local activity"):
        _worker(temporal_env.client, 4)
