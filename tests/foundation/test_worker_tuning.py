"""The worker's throughput settings do what they claim (bench/README.md has the figures)."""

from __future__ import annotations

import gc
import importlib
import sys
from types import ModuleType

import workflows.billing_period
from worker import share_workflow_code, tune_garbage_collection


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
