"""An unsandboxed workflow runner whose cached runs hold no activation's protobuf arena.

The SDK parses every workflow activation with upb, which allocates a message and all its
sub-messages in one arena (outside Python's heap, invisible to tracemalloc); a Python
reference to any sub-message keeps the whole arena alive. A cached run of SDK 1.35 keeps
three such references for as long as it stays in the cache:

- its first activation, through the start's headers, memo and last completion result
  (``Info.headers``, ``Info.raw_memo``, ``ExecuteWorkflowInput.headers``,
  ``last_completion_result``, ``last_failure``);
- its latest activation, through ``deployment_version_for_current_task`` (an unset
  sub-message still points at its parent) and ``available_internal_flags`` (a repeated
  field's container points at its message);
- its latest completion, with every command of its last workflow task and their payloads.

For a period waiting in its grace timer that is ~16 KiB of native memory per cached run
(bench/README.md, "What a cached period holds"). This runner copies those few values into
messages of their own, and drops the finished completion, so the arenas are freed with
the activation. It also makes the run's deterministic ``random.Random`` (2.5 KiB of
Mersenne Twister state) at its first use, from the same seed: the billing workflows never
ask for it. It changes what a run keeps in memory, never what it does: the same
values are read, the same commands are sent, and replay is untouched.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import TypeVar

from google.protobuf.message import Message
from temporalio.bridge.proto.workflow_activation import (
    InitializeWorkflow,
    UpdateRandomSeed,
    WorkflowActivation,
)
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.worker import UnsandboxedWorkflowRunner, WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker._interceptor import ExecuteWorkflowInput
from temporalio.worker._workflow_instance import _WorkflowInstanceImpl

__all__ = ["LeanUnsandboxedWorkflowRunner", "detached"]

_M = TypeVar("_M", bound=Message)


def detached(message: _M) -> _M:
    """A copy of ``message`` in an arena of its own (the size of the message alone)."""
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def _detached_map(messages: Mapping[str, _M]) -> dict[str, _M]:
    return {key: detached(value) for key, value in messages.items()}


class _LeanWorkflowInstance(_WorkflowInstanceImpl):
    """The SDK's workflow instance, letting go of activations once it has handled them."""

    def __init__(self, det: WorkflowInstanceDetails) -> None:
        super().__init__(det)
        # Made from the run's seed (``_current_seed``) when first asked for, below.
        self._random = None  # type: ignore[assignment]

    def _seeded_random(self) -> random.Random:
        if self._random is None:
            self._random = random.Random(self._current_seed)
        return self._random

    def workflow_random(self) -> random.Random:
        self._seeded_random()
        return super().workflow_random()

    def _apply_update_random_seed(self, job: UpdateRandomSeed) -> None:
        self._seeded_random()  # the SDK seeds it again in place
        super()._apply_update_random_seed(job)

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        completion = super().activate(act)
        # The next activation sets it again first; meanwhile a copy answers the same.
        if self._deployment_version_for_current_task is not None:
            self._deployment_version_for_current_task = detached(
                self._deployment_version_for_current_task
            )
        # Only asked ``flag in ...``; every activation sets it again first.
        flags = tuple(self._current_internal_flags)
        self._current_internal_flags = flags  # type: ignore[assignment]  # read as a collection
        # The SDK starts every activation with a new completion; the caller holds this one.
        self._current_completion = WorkflowActivationCompletion()
        return completion

    def _make_workflow_input(self, init_job: InitializeWorkflow) -> ExecuteWorkflowInput:
        made = super()._make_workflow_input(init_job)
        return dataclasses.replace(made, headers=_detached_map(made.headers))


class LeanUnsandboxedWorkflowRunner(UnsandboxedWorkflowRunner):
    """``UnsandboxedWorkflowRunner`` whose instances keep no activation arena alive."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        info = dataclasses.replace(
            det.info,
            headers=_detached_map(det.info.headers),
            raw_memo=_detached_map(det.info.raw_memo),
        )
        det = dataclasses.replace(
            det,
            info=info,
            last_completion_result=detached(det.last_completion_result),
            last_failure=None if det.last_failure is None else detached(det.last_failure),
        )
        return _LeanWorkflowInstance(det)  # type: ignore[abstract]  # as the SDK's own runner
