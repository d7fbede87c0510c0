"""Webhook delivery: one signed HTTP attempt per activity attempt.

The finalization writes an outbox row (a *delivery*) in the same transaction that
finalizes the invoice; :meth:`WebhookActivities.deliver_webhook` sends it. Temporal does
the retrying: every activity attempt makes exactly one HTTP request, records it in the
delivery log (``services.webhooks.record_attempt``) and then either

- returns ``DeliveryResult(status="succeeded")`` on a 2xx answer,
- raises a retryable ``ApplicationError`` of type ``WebhookDeliveryFailed`` (the log
  says ``retrying``) so Temporal retries with :data:`WEBHOOK_RETRY_POLICY`, or
- when the next retry would fall after the request's ``give_up_at``, records the
  delivery as ``failed`` and *returns* ``DeliveryResult(status="failed")``: a failed
  webhook is a visible, operator-retryable state, not a failed workflow.

Usage (the worker is the composition root)::

    activities = WebhookActivities(engine, httpx.AsyncClient())
    Worker(client, task_queue=..., activities=[activities.deliver_webhook], ...)

    # in a workflow
    result = await workflow.execute_activity_method(
        WebhookActivities.deliver_webhook,
        DeliverWebhookRequest(delivery_id=..., give_up_at=workflow.now() + window),
        start_to_close_timeout=WEBHOOK_ATTEMPT_TIMEOUT,
        schedule_to_close_timeout=window + WEBHOOK_SCHEDULE_SLACK,
        retry_policy=WEBHOOK_RETRY_POLICY,
    )

The endpoint secret is read per attempt and used only to sign; it is never logged,
never returned and never part of an exception message (so never in workflow history).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

import httpx
import sqlalchemy
from pydantic import BaseModel, ConfigDict, Field, field_validator
from temporalio import activity
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from billing.errors import NotFound
from billing.signature import sign
from services import webhooks as delivery_log

__all__ = [
    "HEADER_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "USER_AGENT",
    "WEBHOOK_ATTEMPT_TIMEOUT",
    "WEBHOOK_FAILED_ERROR_TYPE",
    "WEBHOOK_HTTP_TIMEOUT",
    "WEBHOOK_RETRY_POLICY",
    "WEBHOOK_SCHEDULE_SLACK",
    "DeliverWebhookRequest",
    "DeliveryResult",
    "WebhookActivities",
    "next_retry_delay",
    "utc_now",
]

logger = logging.getLogger(__name__)

HEADER_ID = "X-Billing-Webhook-Id"
"""The unique key of a webhook (the delivery id); receivers deduplicate on it."""
HEADER_TIMESTAMP = "X-Billing-Webhook-Timestamp"
"""Unix seconds at send time; part of the signed message."""
HEADER_SIGNATURE = "X-Billing-Webhook-Signature"
"""Hex HMAC-SHA256 over ``f"{timestamp}.{body}"`` with the endpoint's secret."""
USER_AGENT = "billing-periods-webhooks/0.1"

WEBHOOK_FAILED_ERROR_TYPE = "WebhookDeliveryFailed"
"""``ApplicationError.type`` of a failed attempt that Temporal will retry."""

WEBHOOK_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    non_retryable_error_types=["NotFound"],
)
"""Backoff between delivery attempts: 1 s, 2 s, 4 s, ... capped at 5 minutes. No
attempt limit: the request's ``give_up_at`` bounds the retrying instead."""

WEBHOOK_HTTP_TIMEOUT = timedelta(seconds=10)
"""Timeout of one HTTP request (connect, write, read, pool)."""
WEBHOOK_ATTEMPT_TIMEOUT = timedelta(seconds=30)
"""``start_to_close_timeout`` of one activity attempt (HTTP plus two database writes)."""
WEBHOOK_SCHEDULE_SLACK = timedelta(minutes=5)
"""Added to the retry window for ``schedule_to_close_timeout``, so the last attempt
before ``give_up_at`` has time to run and record the failure itself."""

_MAX_ERROR_LENGTH = 200


def utc_now() -> datetime:
    """The default clock of :class:`WebhookActivities`."""
    return datetime.now(UTC)


def next_retry_delay(attempt: int, policy: RetryPolicy = WEBHOOK_RETRY_POLICY) -> timedelta:
    """How long Temporal waits after failed attempt ``attempt`` (1-based) before the next.

    ``initial_interval * backoff_coefficient ** (attempt - 1)``, capped at
    ``maximum_interval`` (Temporal's default cap is 100 x the initial interval)::

        >>> [next_retry_delay(n).total_seconds() for n in (1, 2, 3, 10, 50)]
        [1.0, 2.0, 4.0, 300.0, 300.0]
    """
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    initial = policy.initial_interval or timedelta(seconds=1)
    maximum = policy.maximum_interval or initial * 100
    # Cap the exponent: beyond it the delay is at the maximum anyway, and float ** would
    # overflow for very large attempt numbers.
    exponent = min(attempt - 1, 256)
    seconds = initial.total_seconds() * policy.backoff_coefficient**exponent
    return min(timedelta(seconds=min(seconds, maximum.total_seconds())), maximum)


class DeliverWebhookRequest(BaseModel):
    """Input of :meth:`WebhookActivities.deliver_webhook`.

    ``give_up_at`` is absolute (UTC), computed once by the workflow from ``workflow.now()``
    and the retry window, so every attempt agrees on the bound.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    delivery_id: str = Field(min_length=1)
    give_up_at: datetime

    @field_validator("give_up_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("give_up_at must carry a timezone (UTC)")
        return value


class DeliveryResult(BaseModel):
    """Outcome of a delivery as the delivery log records it.

    ``attempts`` counts every HTTP attempt logged for the delivery (0 when unknown,
    e.g. the activity timed out without reporting back). ``last_error`` is an HTTP status
    or an error class, never a secret.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    delivery_id: str
    status: Literal["succeeded", "failed"]
    attempts: int = 0
    last_http_status: int | None = None
    last_error: str | None = None


class WebhookActivities:
    """Webhook activities, built once in the worker with their clients.

    ``clock`` gives the send timestamp (signed, checked by receivers against their own
    clock) and the time logged with each attempt; ``http_timeout`` bounds one request.
    """

    def __init__(
        self,
        engine: sqlalchemy.Engine,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], datetime] = utc_now,
        http_timeout: timedelta = WEBHOOK_HTTP_TIMEOUT,
    ) -> None:
        self._engine = engine
        self._http = http
        self._clock = clock
        self._http_timeout = http_timeout

    @activity.defn
    async def deliver_webhook(self, request: DeliverWebhookRequest) -> DeliveryResult:
        """Make one signed HTTP attempt for a delivery and log it (see the module doc).

        Raises ``ApplicationError(type="NotFound", non_retryable=True)`` for an unknown
        delivery id or a deleted endpoint, and a retryable
        ``ApplicationError(type="WebhookDeliveryFailed")`` when the attempt failed and the
        next retry still falls inside the window.
        """
        info = activity.info()
        began = self._clock()
        attempt = info.attempt
        delivery_id = request.delivery_id
        try:
            delivery, secret = await asyncio.to_thread(
                delivery_log.delivery_to_send, self._engine, delivery_id
            )
        except NotFound as exc:  # the delivery, or its endpoint: nothing to send to
            raise ApplicationError(str(exc), type="NotFound", non_retryable=True) from exc
        if secret is None:
            logger.info(
                "webhook %s attempt %d: already succeeded, nothing sent",
                delivery_id,
                attempt,
                extra=_log_fields(delivery_id, attempt, "succeeded", delivery.last_http_status),
            )
            return _result(delivery, "succeeded")

        sent_at = self._clock()
        timestamp = int(sent_at.timestamp())
        headers = {
            HEADER_ID: delivery_id,
            HEADER_TIMESTAMP: str(timestamp),
            HEADER_SIGNATURE: sign(secret, timestamp, delivery.body),
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        http_status: int | None = None
        error: str | None = None
        try:
            response = await self._http.post(
                delivery.endpoint_url,
                content=delivery.body.encode("utf-8"),
                headers=headers,
                timeout=self._http_timeout.total_seconds(),
            )
            http_status = response.status_code
            if not response.is_success:
                error = f"HTTP {http_status}"
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            error = _describe(exc, secret)

        if error is None:
            delivery = await self._record_attempt(
                delivery_id, http_status=http_status, error=None, succeeded=True, final=True
            )
            logger.info(
                "webhook %s attempt %d: succeeded (HTTP %s)",
                delivery_id,
                attempt,
                http_status,
                extra=_log_fields(delivery_id, attempt, "succeeded", http_status),
            )
            return _result(delivery, "succeeded")

        delay = next_retry_delay(attempt, info.retry_policy or WEBHOOK_RETRY_POLICY)
        # The server's clock decides when the next attempt runs. It is the worker's clock
        # in production, but the time-skipping test server runs ahead of it: take the later
        # of the two (the server's start time of this attempt plus the time spent since).
        clock_now = self._clock()
        now = max(clock_now, info.started_time + (clock_now - began))
        final = now + delay > request.give_up_at
        delivery = await self._record_attempt(
            delivery_id, http_status=http_status, error=error, succeeded=False, final=final
        )
        status = "failed" if final else "retrying"
        logger.warning(
            "webhook %s attempt %d: %s (%s)",
            delivery_id,
            attempt,
            status,
            error,
            extra=_log_fields(delivery_id, attempt, status, http_status),
        )
        if final:
            return _result(delivery, "failed")
        raise ApplicationError(
            f"webhook {delivery_id} attempt {attempt} failed: {error}; "
            f"retrying in {delay.total_seconds():g}s",
            type=WEBHOOK_FAILED_ERROR_TYPE,
        )

    async def _record_attempt(
        self,
        delivery_id: str,
        *,
        http_status: int | None,
        error: str | None,
        succeeded: bool,
        final: bool,
    ) -> delivery_log.WebhookDelivery:
        # The store is synchronous: keep it off the worker's event loop.
        return await asyncio.to_thread(
            functools.partial(
                delivery_log.record_attempt,
                self._engine,
                delivery_id,
                http_status=http_status,
                error=error,
                succeeded=succeeded,
                final=final,
                at=self._clock(),
            )
        )


def _result(
    delivery: delivery_log.WebhookDelivery, status: Literal["succeeded", "failed"]
) -> DeliveryResult:
    return DeliveryResult(
        delivery_id=delivery.id,
        status=status,
        attempts=delivery.attempts,
        last_http_status=delivery.last_http_status,
        last_error=delivery.last_error,
    )


def _describe(exc: BaseException, secret: str) -> str:
    """An error class and short reason, safe to log and to keep in history."""
    reason = str(exc).strip()
    text = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
    if secret:
        text = text.replace(secret, "***")
    return text[:_MAX_ERROR_LENGTH]


def _log_fields(
    delivery_id: str, attempt: int, status: str, http_status: int | None
) -> dict[str, object]:
    return {
        "webhook_delivery_id": delivery_id,
        "webhook_attempt": attempt,
        "webhook_status": status,
        "webhook_http_status": http_status,
    }
