"""The local webhook receiver: real sockets, real HTTP (httpx) against it."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from billing.signature import sign
from starter.webhook_sink import (
    ReceivedWebhook,
    WebhookSink,
    WebhookSinkError,
    format_delivery,
)

SECRET = "whsec_sink_test"
BODY = json.dumps({"webhook_type": "invoice.created", "object_type": "invoice", "invoice": {}})


def _headers(webhook_id: str, *, secret: str = SECRET, body: str = BODY) -> dict[str, str]:
    timestamp = int(time.time())
    return {
        "X-Billing-Webhook-Id": webhook_id,
        "X-Billing-Webhook-Timestamp": str(timestamp),
        "X-Billing-Webhook-Signature": sign(secret, timestamp, body),
        "Content-Type": "application/json",
    }


async def test_records_verifies_and_deduplicates(tmp_path: Path) -> None:
    seen: list[ReceivedWebhook] = []
    record = tmp_path / "webhooks.jsonl"
    sink = WebhookSink(secret=SECRET, record_path=record, on_delivery=seen.append)
    async with sink, httpx.AsyncClient() as http:
        first = await http.post(sink.url, content=BODY, headers=_headers("wh-1"))
        again = await http.post(sink.url, content=BODY, headers=_headers("wh-1"))
        forged = await http.post(
            sink.url, content=BODY, headers=_headers("wh-2", secret="not-the-secret")
        )
    assert [first.status_code, again.status_code, forged.status_code] == [200, 200, 200]
    assert [(r.webhook_id, r.verified, r.duplicate) for r in sink.received] == [
        ("wh-1", True, False),
        ("wh-1", True, True),
        ("wh-2", False, False),
    ]
    assert seen == sink.received
    assert [r.webhook_id for r in sink.accepted] == ["wh-1", "wh-2"]
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [line["duplicate"] for line in lines] == [False, True, False]
    assert lines[0]["body"] == BODY
    assert lines[0]["headers"]["x-billing-webhook-id"] == "wh-1"
    assert set(lines[0]) >= {"received_at", "headers", "body", "verified"}
    assert "wh-1" in format_delivery(sink.received[0])


async def test_failure_modes() -> None:
    async with WebhookSink(secret=SECRET) as sink, httpx.AsyncClient() as http:
        sink.fail_next(2, status=503)
        statuses = [
            (await http.post(sink.url, content=BODY, headers=_headers("wh-1"))).status_code
            for _ in range(3)
        ]
        assert statuses == [503, 503, 200]
        # A failed request is not processed, so the next copy is not a duplicate.
        assert [r.duplicate for r in sink.received] == [False, False, False]

        sink.respond_with(410)
        assert (await http.post(sink.url, content=BODY)).status_code == 410
        sink.reset()

        sink.delay_next(5)
        with pytest.raises(httpx.ReadTimeout):
            await http.post(sink.url, content=BODY, headers=_headers("wh-2"), timeout=0.3)

        sink.garbage_next()
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(sink.url, content=BODY, headers=_headers("wh-3"))
        assert sink.received[-1].response_status is None

        assert (
            await http.post(sink.url, content=BODY, headers=_headers("wh-4"))
        ).status_code == 200


async def test_port_taken_names_the_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sink = WebhookSink()
        with pytest.raises(WebhookSinkError, match=f"127.0.0.1:{port}"):
            await sink.start("127.0.0.1", port)


async def test_can_reject_bad_signatures() -> None:
    async with (
        WebhookSink(secret=SECRET, reject_unverified=True) as sink,
        httpx.AsyncClient() as http,
    ):
        good = await http.post(sink.url, content=BODY, headers=_headers("wh-1"))
        bad = await http.post(sink.url, content=BODY, headers=_headers("wh-2", secret="nope"))
        unsigned = await http.post(sink.url, content=BODY)
    assert [good.status_code, bad.status_code, unsigned.status_code] == [200, 401, 401]
    assert [r.verified for r in sink.received] == [True, False, False]
