"""WebhookActivities.deliver_webhook, one attempt at a time: real HTTP to a local sink,
real database, Temporal's ActivityEnvironment for the attempt number."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import pytest_asyncio
import sqlalchemy
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.webhooks import (
    WEBHOOK_FAILED_ERROR_TYPE,
    WEBHOOK_RETRY_POLICY,
    DeliverWebhookRequest,
    DeliveryResult,
    WebhookActivities,
    next_retry_delay,
)
from billing.signature import verify_signature
from services.webhooks import get_delivery, list_deliveries
from starter.webhook_sink import WebhookSink
from tests.activities.webhook_support import SECRET, finalized_delivery

HOUR = timedelta(hours=1)


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def _env(attempt: int = 1) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt, activity_type="deliver_webhook")
    return env


def _request(delivery_id: str, bound: timedelta = HOUR) -> DeliverWebhookRequest:
    return DeliverWebhookRequest(delivery_id=delivery_id, give_up_at=datetime.now(UTC) + bound)


async def _deliver(
    activities: WebhookActivities, request: DeliverWebhookRequest, attempt: int = 1
) -> DeliveryResult:
    return await _env(attempt).run(activities.deliver_webhook, request)


def test_backoff_follows_the_retry_policy() -> None:
    delays = [next_retry_delay(n).total_seconds() for n in range(1, 12)]
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert next_retry_delay(10_000) == WEBHOOK_RETRY_POLICY.maximum_interval
    with pytest.raises(ValueError):
        next_retry_delay(0)


async def test_success_signed_and_logged(
    engine: sqlalchemy.Engine, sink: WebhookSink, http: httpx.AsyncClient
) -> None:
    delivery_id = finalized_delivery(engine, sink.url)
    activities = WebhookActivities(engine, http)

    result = await _deliver(activities, _request(delivery_id))

    assert result == DeliveryResult(
        delivery_id=delivery_id, status="succeeded", attempts=1, last_http_status=200
    )
    [received] = sink.received
    assert received.webhook_id == delivery_id
    assert received.verified is True
    assert received.headers["content-type"] == "application/json"
    assert received.headers["user-agent"].startswith("billing-periods-webhooks/")
    timestamp = int(received.headers["x-billing-webhook-timestamp"])
    assert abs(timestamp - datetime.now(UTC).timestamp()) < 60
    # The receiver's helper accepts the signature; a tampered body does not verify.
    signature = received.headers["x-billing-webhook-signature"]
    now = int(datetime.now(UTC).timestamp())
    assert verify_signature(SECRET, received.body, timestamp, signature, now=now)
    assert not verify_signature(SECRET, received.body + " ", timestamp, signature, now=now)
    assert not verify_signature("other-secret", received.body, timestamp, signature, now=now)
    payload = json.loads(received.body)
    assert payload["webhook_type"] == "invoice.created"
    assert payload["object_type"] == "invoice"
    assert payload["invoice"]["status"] == "finalized"
    assert received.body == get_delivery(engine, delivery_id).body

    delivery = get_delivery(engine, delivery_id)
    assert (delivery.status, delivery.attempts, delivery.last_http_status) == ("succeeded", 1, 200)


async def test_already_succeeded_is_not_sent_again(
    engine: sqlalchemy.Engine, sink: WebhookSink, http: httpx.AsyncClient
) -> None:
    delivery_id = finalized_delivery(engine, sink.url)
    activities = WebhookActivities(engine, http)
    first = await _deliver(activities, _request(delivery_id))
    # Temporal may run an activity again (e.g. its completion was lost): nothing is sent.
    again = await _deliver(activities, _request(delivery_id), attempt=2)
    assert again == first
    assert len(sink.received) == 1
    assert get_delivery(engine, delivery_id).attempts == 1


async def test_server_error_records_retrying_and_raises_retryable(
    engine: sqlalchemy.Engine, sink: WebhookSink, http: httpx.AsyncClient
) -> None:
    delivery_id = finalized_delivery(engine, sink.url)
    sink.fail_next(1, status=500)
    activities = WebhookActivities(engine, http)

    with pytest.raises(ApplicationError) as caught:
        await _deliver(activities, _request(delivery_id))

    assert caught.value.type == WEBHOOK_FAILED_ERROR_TYPE
    assert not caught.value.non_retryable
    assert "HTTP 500" in caught.value.message
    delivery = get_delivery(engine, delivery_id)
    assert (delivery.status, delivery.attempts, delivery.last_http_status) == ("retrying", 1, 500)
    assert [d.id for d in list_deliveries(engine, status="retrying")] == [delivery_id]

    # The next attempt (Temporal's retry) succeeds with the same webhook id.
    result = await _deliver(activities, _request(delivery_id), attempt=2)
    assert (result.status, result.attempts, result.last_http_status) == ("succeeded", 2, 200)
    assert [r.webhook_id for r in sink.received] == [delivery_id, delivery_id]
    assert all(r.verified for r in sink.received)


async def test_client_error_is_retried_too(
    engine: sqlalchemy.Engine, sink: WebhookSink, http: httpx.AsyncClient
) -> None:
    delivery_id = finalized_delivery(engine, sink.url)
    sink.fail_next(1, status=404)
    with pytest.raises(ApplicationError, match="HTTP 404"):
        await _deliver(WebhookActivities(engine, http), _request(delivery_id))
    assert get_delivery(engine, delivery_id).status == "retrying"


async def test_failure_past_the_bound_is_recorded_and_returned(
    engine: sqlalchemy.Engine, sink: WebhookSink, http: httpx.AsyncClient
) -> None:
    delivery_id = finalized_delivery(engine, sink.url)
    sink.respond_with(503)
    activities = WebhookActivities(engine, http)

    # The first retry would come 1 s later, after the bound: give up now, visibly.
    result = await _deliver(activities, _request(delivery_id, bound=timedelta(milliseconds=500)))

    assert result == DeliveryResult(
        delivery_id=delivery_id,
        status="failed",
        attempts=1,
        last_http_status=503,
        last_error=result.last_error,
    )
    assert result.last_error is not None
    assert "503" in result.last_error
    assert [d.id for d in list_deliveries(engine, status="failed")] == [delivery_id]


async def test_backoff_of_the_attempt_decides_the_bound(
    engine: sqlalchemy.Engine, sink: WebhookSink, http: httpx.AsyncClient
) -> None:
    delivery_id = finalized_delivery(engine, sink.url)
    sink.respond_with(502)
    activities = WebhookActivities(engine, http)
    request = _request(delivery_id, bound=timedelta(seconds=100))
    # Attempt 3 is followed by a 4 s backoff: inside the window, so Temporal retries.
    with pytest.raises(ApplicationError):
        await _deliver(activities, request, attempt=3)
    # Attempt 9 is followed by 256 s: after the window, so this was the last attempt.
    result = await _deliver(activities, request, attempt=9)
    assert result.status == "failed"
    assert get_delivery(engine, delivery_id).status == "failed"


async def test_timeout_connection_refused_and_garbage_are_retried(
    engine: sqlalchemy.Engine, sink: WebhookSink, http: httpx.AsyncClient
) -> None:
    delivery_id = finalized_delivery(engine, sink.url)
    activities = WebhookActivities(engine, http, http_timeout=timedelta(milliseconds=300))
    request = _request(delivery_id)

    sink.delay_next(5)
    with pytest.raises(ApplicationError, match="Timeout"):
        await _deliver(activities, request, attempt=1)

    sink.garbage_next()
    with pytest.raises(ApplicationError, match="RemoteProtocolError"):
        await _deliver(activities, request, attempt=2)

    await sink.stop()
    with pytest.raises(ApplicationError, match="ConnectError"):
        await _deliver(activities, request, attempt=3)

    delivery = get_delivery(engine, delivery_id)
    assert (delivery.status, delivery.attempts, delivery.last_http_status) == ("retrying", 3, None)
    assert delivery.last_error is not None
    assert "ConnectError" in delivery.last_error


async def test_unknown_delivery_is_not_retried(
    engine: sqlalchemy.Engine, http: httpx.AsyncClient
) -> None:
    with pytest.raises(ApplicationError) as caught:
        await _deliver(WebhookActivities(engine, http), _request("no-such-delivery"))
    assert caught.value.type == "NotFound"
    assert caught.value.non_retryable


async def test_secret_and_signature_never_logged(
    engine: sqlalchemy.Engine,
    sink: WebhookSink,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    delivery_id = finalized_delivery(engine, sink.url)
    activities = WebhookActivities(engine, http)
    caplog.set_level(logging.DEBUG)
    sink.fail_next(1)
    with pytest.raises(ApplicationError) as caught:
        await _deliver(activities, _request(delivery_id))
    await _deliver(activities, _request(delivery_id), attempt=2)

    signatures = {r.headers["x-billing-webhook-signature"] for r in sink.received}
    attempt_lines = [r for r in caplog.records if r.name == "activities.webhooks"]
    fields = [
        tuple(
            getattr(r, name)
            for name in ("webhook_attempt", "webhook_status", "webhook_http_status")
        )
        for r in attempt_lines
    ]
    assert fields == [(1, "retrying", 500), (2, "succeeded", 200)]
    assert {vars(r)["webhook_delivery_id"] for r in attempt_lines} == {delivery_id}
    everything = caplog.text + "".join(repr(vars(r)) for r in caplog.records)
    everything += str(caught.value) + repr(caught.value.details)
    assert SECRET not in everything
    for signature in signatures:
        assert signature not in everything
