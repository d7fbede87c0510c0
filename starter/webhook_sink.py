"""A small local webhook receiver for ``billing dev`` and the tests.

It accepts the POSTs that :mod:`activities.webhooks` sends, verifies their signature
(with :func:`billing.signature.verify_signature` when it knows the secret; a bad signature
is recorded, and answered 401 with ``reject_unverified=True``), deduplicates
on ``X-Billing-Webhook-Id`` the way a real receiver should, and records every request it
sees: in memory (:attr:`WebhookSink.received`), optionally as one JSON line per request in
a file, and through an ``on_delivery`` callback.

Tests can make it misbehave: :meth:`~WebhookSink.fail_next` (answer 5xx/4xx),
:meth:`~WebhookSink.respond_with` (always answer a status), :meth:`~WebhookSink.delay_next`
(hang, so the sender times out) and :meth:`~WebhookSink.garbage_next` (answer bytes that
are not HTTP).

Usage::

    sink = WebhookSink(secret="whsec_...", record_path=Path("data/webhooks.jsonl"))
    await sink.start("127.0.0.1", 0)      # port 0: any free port
    print(sink.url)                         # http://127.0.0.1:54321/
    sink.fail_next(3)                       # the next three requests get HTTP 500
    ...
    await sink.stop()

Run alone::

    python -m starter.webhook_sink --port 8765 --secret whsec_... --record data/webhooks.jsonl

The server is plain asyncio streams speaking just enough HTTP/1.1 (one request per
connection, ``Content-Length`` bodies); it is a development tool, not a production server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import inspect
import json
import os
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from billing.signature import verify_signature

__all__ = [
    "HEADER_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "ReceivedWebhook",
    "WebhookSink",
    "WebhookSinkError",
    "format_delivery",
    "main",
]

# The header names of activities/webhooks.py, lower case as the sink stores them. Kept
# here (not imported) so that starting a sink never imports the activity layer.
HEADER_ID = "x-billing-webhook-id"
HEADER_TIMESTAMP = "x-billing-webhook-timestamp"
HEADER_SIGNATURE = "x-billing-webhook-signature"

_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 16 * 1024 * 1024
_REASONS = {
    200: "OK",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class WebhookSinkError(OSError):
    """The sink cannot listen (the message names the host and port)."""


@dataclass(frozen=True)
class ReceivedWebhook:
    """One request the sink received, and what it answered.

    ``verified`` is ``None`` when the sink has no secret to check with. ``duplicate`` is
    true when a request with the same ``X-Billing-Webhook-Id`` was already accepted (2xx)
    before. ``response_status`` is ``None`` when the sink answered garbage or nothing.
    Header names are lower case.
    """

    received_at: datetime
    method: str
    path: str
    headers: dict[str, str]
    body: str
    verified: bool | None
    duplicate: bool
    response_status: int | None

    @property
    def webhook_id(self) -> str | None:
        return self.headers.get(HEADER_ID)

    @property
    def accepted(self) -> bool:
        """The sink answered 2xx."""
        return self.response_status is not None and 200 <= self.response_status < 300

    def payload(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` if it is not JSON)."""
        return json.loads(self.body)

    def to_json(self) -> dict[str, Any]:
        """The JSON line written to the record file."""
        return {
            "received_at": self.received_at.isoformat(),
            "method": self.method,
            "path": self.path,
            "webhook_id": self.webhook_id,
            "headers": self.headers,
            "body": self.body,
            "verified": self.verified,
            "duplicate": self.duplicate,
            "response_status": self.response_status,
        }


@dataclass(frozen=True)
class _Plan:
    """What to do with one upcoming request."""

    status: int | None = None  # None: the default status
    delay_seconds: float = 0.0
    garbage: bool = False


@dataclass(eq=False)
class _Connection:
    task: asyncio.Task[None]
    writer: asyncio.StreamWriter = field(repr=False)


DeliveryCallback = Callable[[ReceivedWebhook], object]
"""Called once per received request; may be a coroutine function."""


class WebhookSink:
    """An asyncio HTTP server that records webhook deliveries (see the module doc)."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        record_path: Path | str | None = None,
        on_delivery: DeliveryCallback | None = None,
        tolerance_seconds: int = 300,
        reject_unverified: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.secret = secret
        self.record_path = Path(record_path) if record_path is not None else None
        self.on_delivery = on_delivery
        self.tolerance_seconds = tolerance_seconds
        self.reject_unverified = reject_unverified
        self._clock = clock
        self.received: list[ReceivedWebhook] = []
        self._accepted_ids: set[str] = set()
        self._plans: deque[_Plan] = deque()
        self._default_status = 200
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._changed = asyncio.Condition()
        self._host = ""
        self._port = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 8765) -> None:
        """Listen on ``host:port`` (port 0 picks a free one; see :attr:`port`).

        Raises :class:`WebhookSinkError` naming the port when it is taken.
        """
        if self._server is not None:
            raise RuntimeError(f"the webhook sink is already listening on {self.url}")
        try:
            self._server = await asyncio.start_server(self._handle, host, port)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                why = (
                    "the port is already in use"
                    if exc.errno == errno.EADDRINUSE
                    else "permission denied"
                )
                raise WebhookSinkError(
                    exc.errno,
                    f"webhook sink cannot listen on {host}:{port}: {why}; is another sink "
                    f"or `billing dev` running? Choose another port (--port, or "
                    f"BILLING_WEBHOOK_SINK_PORT)",
                ) from exc
            raise WebhookSinkError(
                exc.errno, f"webhook sink cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        sockname = self._server.sockets[0].getsockname()
        self._host, self._port = host, int(sockname[1])

    async def stop(self) -> None:
        """Stop listening and drop open connections (hanging requests included)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self._connections):
            connection.writer.close()
            connection.task.cancel()
        for connection in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connection.task
        await server.wait_closed()

    async def __aenter__(self) -> WebhookSink:
        if self._server is None:
            await self.start("127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The URL to configure as the webhook endpoint, e.g. ``http://127.0.0.1:8765/``."""
        if not self._port:
            raise RuntimeError("the webhook sink is not started")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}/"

    # ------------------------------------------------------------------ behaviour

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """Answer the next ``n`` requests with ``status`` (a 5xx or 4xx)."""
        self._plans.extend(_Plan(status=status) for _ in range(n))

    def respond_with(self, status: int) -> None:
        """Answer every request without a planned behaviour with ``status`` from now on
        (``respond_with(503)``: receiver down; ``respond_with(200)``: recovered)."""
        self._default_status = status

    def delay_next(self, seconds: float, n: int = 1, *, status: int | None = None) -> None:
        """Hang for ``seconds`` before answering the next ``n`` requests (so a sender with
        a shorter timeout gives up), then answer ``status`` (default: the default status)."""
        self._plans.extend(_Plan(status=status, delay_seconds=seconds) for _ in range(n))

    def garbage_next(self, n: int = 1) -> None:
        """Answer the next ``n`` requests with bytes that are not HTTP, then hang up."""
        self._plans.extend(_Plan(garbage=True) for _ in range(n))

    def reset(self) -> None:
        """Forget planned behaviours and answer 200 again (records are kept)."""
        self._plans.clear()
        self._default_status = 200

    # ------------------------------------------------------------------ inspection

    @property
    def accepted(self) -> list[ReceivedWebhook]:
        """Requests answered 2xx that were not duplicates: what a receiver processed."""
        return [item for item in self.received if item.accepted and not item.duplicate]

    def for_webhook(self, webhook_id: str) -> list[ReceivedWebhook]:
        """Every request carrying this ``X-Billing-Webhook-Id``, in arrival order."""
        return [item for item in self.received if item.webhook_id == webhook_id]

    async def wait_for(self, count: int, *, timeout: float = 10.0) -> list[ReceivedWebhook]:
        """Wait until at least ``count`` requests were received; returns them all."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.received) >= count)
        return list(self.received)

    # ------------------------------------------------------------------ server

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connection = _Connection(task=task, writer=writer)
        self._connections.add(connection)
        try:
            await self._serve_one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._connections.discard(connection)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _MAX_HEADER_BYTES:
            await _respond(writer, 431, b"")
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            await _respond(writer, 400, b"malformed request line\n")
            return
        method, path, _version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if method == "GET":
            summary = {"received": len(self.received), "accepted": len(self.accepted)}
            await _respond(writer, 200, json.dumps(summary).encode() + b"\n")
            return
        if method != "POST":
            await _respond(writer, 405, b"POST webhooks here\n")
            return
        if "content-length" not in headers:
            await _respond(writer, 411, b"Content-Length required\n")
            return
        try:
            length = int(headers["content-length"])
        except ValueError:
            await _respond(writer, 400, b"bad Content-Length\n")
            return
        if not 0 <= length <= _MAX_BODY_BYTES:
            await _respond(writer, 413, b"")
            return
        raw_body = await reader.readexactly(length)
        received_at = self._clock()
        body = raw_body.decode("utf-8", errors="replace")

        plan = self._plans.popleft() if self._plans else _Plan()
        status: int | None = None if plan.garbage else (plan.status or self._default_status)
        verified = self._verify(headers, raw_body)
        if verified is False and self.reject_unverified and status is not None:
            status = 401
        webhook_id = headers.get(HEADER_ID)
        duplicate = webhook_id is not None and webhook_id in self._accepted_ids
        record = ReceivedWebhook(
            received_at=received_at,
            method=method,
            path=path,
            headers=headers,
            body=body,
            verified=verified,
            duplicate=duplicate,
            response_status=status,
        )
        if record.accepted and webhook_id is not None:
            self._accepted_ids.add(webhook_id)
        await self._record(record)

        if plan.delay_seconds:
            await asyncio.sleep(plan.delay_seconds)
        if plan.garbage:
            writer.write(b"this is not HTTP \x00\xff\r\n\r\n")
            await writer.drain()
            return
        assert status is not None
        answer: dict[str, Any] = {"ok": 200 <= status < 300, "duplicate": duplicate}
        await _respond(writer, status, json.dumps(answer).encode() + b"\n")

    def _verify(self, headers: dict[str, str], body: bytes) -> bool | None:
        if self.secret is None:
            return None
        signature = headers.get(HEADER_SIGNATURE)
        timestamp = headers.get(HEADER_TIMESTAMP)
        if not signature or not timestamp:
            return False
        try:
            return verify_signature(
                self.secret,
                body,
                int(timestamp),
                signature,
                now=int(self._clock().timestamp()),
                tolerance_seconds=self.tolerance_seconds,
            )
        except (ValueError, TypeError):
            return False

    async def _record(self, record: ReceivedWebhook) -> None:
        async with self._changed:
            self.received.append(record)
            self._changed.notify_all()
        if self.record_path is not None:
            self.record_path.parent.mkdir(parents=True, exist_ok=True)
            with self.record_path.open("a", encoding="utf-8") as file:
                file.write(json.dumps(record.to_json(), sort_keys=True) + "\n")
        if self.on_delivery is not None:
            result = self.on_delivery(record)
            if inspect.isawaitable(result):
                await result


async def _respond(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
    reason = _REASONS.get(status, "Status")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + body)
    await writer.drain()


def format_delivery(record: ReceivedWebhook) -> str:
    """One line per delivery, as ``billing dev`` and ``main()`` print it."""
    webhook_type = "?"
    invoice = "?"
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        payload = record.payload()
        webhook_type = str(payload.get("webhook_type", "?"))
        data = payload.get("invoice") or {}
        invoice = str(data.get("number") or data.get("id") or "?")
    verified = {True: "signature ok", False: "SIGNATURE INVALID", None: "unverified"}[
        record.verified
    ]
    answer = record.response_status if record.response_status is not None else "garbage"
    duplicate = " duplicate" if record.duplicate else ""
    return (
        f"{record.received_at:%H:%M:%S} webhook {record.webhook_id or '-'} {webhook_type} "
        f"invoice {invoice}: {verified}, answered {answer}{duplicate}"
    )


async def _serve(args: argparse.Namespace) -> None:
    sink = WebhookSink(
        secret=args.secret,
        record_path=args.record,
        on_delivery=lambda record: print(format_delivery(record), flush=True),
    )
    await sink.start(args.host, args.port)
    if args.fail_status is not None:
        sink.respond_with(args.fail_status)
    print(f"webhook sink listening on {sink.url} (Ctrl-C to stop)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sink.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m starter.webhook_sink``: run a sink until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m starter.webhook_sink", description="Receive and record billing webhooks."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--secret",
        default=os.environ.get("BILLING_WEBHOOK_SECRET"),
        help="endpoint secret to verify signatures with (default: $BILLING_WEBHOOK_SECRET)",
    )
    parser.add_argument("--record", type=Path, help="append one JSON line per request here")
    parser.add_argument(
        "--fail-status", type=int, help="answer every request with this status (outage drill)"
    )
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except WebhookSinkError as exc:
        print(f"error: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
