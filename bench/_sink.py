"""The webhook receiver of bench/close.py, in a process of its own (as a real receiver is).

Prints ``listening <port>`` once, then one line ``<subscription> <monotonic seconds>``
per ``invoice.created`` webhook accepted (signature verified, first copy).
``time.monotonic`` is the system-wide CLOCK_MONOTONIC on Linux, so the bench can compare
it with its own.

With ``--every-request`` it prints instead one JSON line per request it received:
``type`` (the webhook type), ``subscription``, ``invoice_id``, ``webhook_id`` (the
``X-Billing-Webhook-Id`` receivers deduplicate on), ``verified`` (signature), ``accepted``
(answered 2xx), ``duplicate`` (that webhook id was accepted before: a redelivery) and
``at`` (monotonic seconds).

    python bench/_sink.py SECRET [--every-request]
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

from starter.webhook_sink import ReceivedWebhook, WebhookSink


def report(record: ReceivedWebhook) -> None:
    if record.accepted and not record.duplicate:
        payload = json.loads(record.body)
        if payload.get("webhook_type") == "invoice.created":
            subscription = payload["invoice"]["subscription_external_id"]
            sys.stdout.write(f"{subscription} {time.monotonic()}\n")
            sys.stdout.flush()


def report_every_request(record: ReceivedWebhook) -> None:
    at = time.monotonic()
    try:
        payload = json.loads(record.body)
        invoice = payload.get("invoice") or {}
        kind = str(payload.get("webhook_type"))
    except (ValueError, AttributeError):
        invoice, kind = {}, "unreadable"
    line = {
        "type": kind,
        "subscription": invoice.get("subscription_external_id"),
        "invoice_id": invoice.get("id"),
        "webhook_id": record.webhook_id,
        "verified": record.verified,
        "accepted": record.accepted,
        "duplicate": record.duplicate,
        "at": at,
    }
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def serve(secret: str, every_request: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    sink = WebhookSink(secret=secret, on_delivery=report_every_request if every_request else report)
    await sink.start("127.0.0.1", 0)
    print(f"listening {sink.port}", flush=True)
    await stop.wait()
    await sink.stop()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], "--every-request" in sys.argv[2:]))
