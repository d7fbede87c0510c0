"""The worker's throughput settings do what they claim (bench/README.md has the figures)."""

from __future__ import annotations

import gc
import importlib.util
import shutil
from pathlib import Path

import workflows.billing_period
from worker import cache_workflow_bytecode, tune_garbage_collection


def test_workflow_bytecode_is_cached_for_the_sandbox_to_reuse() -> None:
    source = Path(workflows.billing_period.__file__)
    cached = Path(importlib.util.cache_from_source(str(source)))
    shutil.rmtree(cached.parent, ignore_errors=True)  # PYTHONDONTWRITEBYTECODE: none yet

    cache_workflow_bytecode()

    assert cached.exists()
    assert cached.stat().st_mtime >= source.stat().st_mtime


def test_start_up_objects_are_frozen_out_of_garbage_collection() -> None:
    try:
        tune_garbage_collection()
        assert gc.get_freeze_count() > 0  # no longer walked by full collections
    finally:
        gc.unfreeze()
