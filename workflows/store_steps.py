"""How the billing period runs a store step: an activity with one timeout and one retry
policy, whose permanent failure becomes the workflow's ``ApplicationError``.

The period's own steps (recording usage, drafting, finalizing) are **local activities**:
they run inside the workflow task that asks for them, and the history records a marker
with their result instead of three activity events and another workflow task (a month-end
close: bench/README.md). They are short (one unit of work) and idempotent on their
business key, and a step run again after its workflow task was lost answers what its
first run did (usage keeps its receipt under the step's key). A workflow task keeps its
slot while its local activity runs, so a worker takes few workflow tasks at once
(``BILLING_WORKFLOW_TASK_SLOTS``, 4) and keeps as many activity threads for their local
activities (``worker.build_worker``); a step that keeps failing waits in a durable timer.

An operator's edits (fee edit, removal, refresh, following a grace period setting) are
local activities too: the workflow task that received the update answers it, and that
task has the period's priority (in runs before patch ``local-edits-usage-as-received``
they are regular activities with the edit priority). Regular activities stay where a task
queue does something for us: the debounced refresh after late usage, the rejections'
record, and the webhook delivery (it may wait minutes on a customer's endpoint).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import Priority, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

__all__ = ["LOCAL_RETRY_THRESHOLD", "STORE_RETRY_POLICY", "STORE_TIMEOUT", "store_step"]

# Store activities retry until the database is back.
STORE_TIMEOUT = timedelta(seconds=60)
STORE_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
LOCAL_RETRY_THRESHOLD = timedelta(seconds=5)


async def store_step(
    activity: Any,
    request: BaseModel,
    *,
    summary: str,
    priority: Priority = Priority.default,
    local: bool = False,
) -> Any:
    """Run a store activity (``local``: as a local activity; ``priority`` applies to
    regular ones); a permanent failure becomes an ``ApplicationError``."""
    assert not (local and priority != Priority.default), "a local activity has no task queue"
    try:
        if local:
            return await workflow.execute_local_activity_method(
                activity,
                request,
                start_to_close_timeout=STORE_TIMEOUT,
                retry_policy=STORE_RETRY_POLICY,
                # A failing step (the database down) waits out its backoff in a durable
                # timer after a few seconds, not inside a workflow task that keeps its slot.
                local_retry_threshold=LOCAL_RETRY_THRESHOLD,
                summary=summary,
            )
        return await workflow.execute_activity_method(
            activity,
            request,
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY_POLICY,
            summary=summary,
            priority=priority,
        )
    except ActivityError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError):
            raise ApplicationError(cause.message, type=cause.type, non_retryable=True) from None
        raise ApplicationError(
            f"{summary} failed: {cause}", type="StoreFailure", non_retryable=True
        ) from None
