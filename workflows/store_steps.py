"""How the billing period runs a store step: a regular activity with one timeout and one
retry policy, whose permanent failure becomes the workflow's ``ApplicationError``.

Regular activities, not local ones: with store steps as local activities, two worker
processes under a month-end close stop polling workflow tasks for good.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import Priority, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

__all__ = ["STORE_RETRY_POLICY", "STORE_TIMEOUT", "store_step"]

# Store activities retry until the database is back.
STORE_TIMEOUT = timedelta(seconds=60)
STORE_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)


async def store_step(
    activity: Any,
    request: BaseModel,
    *,
    summary: str,
    priority: Priority = Priority.default,
) -> Any:
    """Run a store activity; a permanent failure becomes an ``ApplicationError``."""
    try:
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
