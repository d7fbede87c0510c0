"""``billing codec-server``: Temporal's remote codec endpoint over the payload keys.

The Temporal UI (and ``temporal workflow show --codec-endpoint ... --codec-auth ...``)
sends the encrypted payloads of a history here and shows what comes back:

- ``POST .../decode`` and ``POST .../encode`` take and return ``{"payloads": [...]}``,
  each payload as protobuf JSON (``metadata`` values and ``data`` in base64);
- only callers presenting the token are served (401 otherwise): scripts and the
  ``temporal`` CLI as ``Authorization: Bearer <BILLING_CODEC_SERVER_TOKEN>``; browsers
  with the session cookie that ``/login`` sets once the token is typed in there (the
  Temporal UI cannot send a header of ours; with "Include cross-origin credentials" it
  sends the cookie). An ``X-Namespace`` other than ``TEMPORAL_NAMESPACE`` is refused;
- CORS for the configured UI origins (``BILLING_CODEC_SERVER_ORIGINS``): preflight
  ``OPTIONS``, ``Access-Control-Allow-Origin`` and ``-Credentials``, and the
  ``Authorization``, ``Content-Type`` and ``X-Namespace`` request headers;
- ``GET /health`` answers 200 without credentials, for health checks.

It logs one line per request (method, path, status, number of payloads), never a payload
or a header's value. Like the webhook sink it is plain asyncio streams, one request per
connection; put TLS in front of it (a reverse proxy) anywhere but on one machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import hmac
import html
import json
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from config.codec import EncryptionCodec, PayloadKeyError

__all__ = ["SESSION_COOKIE", "CodecServer", "CodecServerError"]

log = logging.getLogger("billing.codec_server")

_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 32 * 1024 * 1024  # a history page of large payloads
_ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"
SESSION_COOKIE = "billing_codec_session"
_SESSION_SECONDS = 12 * 3600
_LOGIN_FORM = """<!doctype html><title>Billing codec server</title>
<p>{message}</p>
<form method="post" action="login"><label>Token
<input type="password" name="token" autocomplete="off" autofocus></label>
<button>Sign in</button></form>"""
_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
}


class CodecServerError(OSError):
    """The codec server cannot listen (the message names the host and port)."""


class _Refusal(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class CodecServer:
    """An asyncio HTTP server decoding and encoding payloads for authorised callers."""

    def __init__(
        self,
        codec: EncryptionCodec,
        *,
        token: str,
        namespace: str,
        origins: Sequence[str] = (),
        request_seconds: float = 30.0,
    ) -> None:
        if not token:
            raise ValueError("the codec server needs a token (BILLING_CODEC_SERVER_TOKEN)")
        self._codec = codec
        self._token = token.encode()
        # Derived from the token: changing the token ends every browser session.
        self._session = hmac.new(self._token, b"codec session", hashlib.sha256).hexdigest()
        self._namespace = namespace
        self._origins = frozenset(origin.rstrip("/") for origin in origins if origin)
        self._request_seconds = request_seconds
        self._server: asyncio.Server | None = None
        self._host = ""
        self._port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 8081) -> None:
        """Listen on ``host:port`` (port 0 picks a free one; see :attr:`port`)."""
        try:
            self._server = await asyncio.start_server(self._handle, host, port)
        except OSError as exc:
            why = "the port is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise CodecServerError(
                exc.errno, f"codec server cannot listen on {host}:{port}: {why or exc}"
            ) from exc
        self._host, self._port = host, int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def __aenter__(self) -> CodecServer:
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
        """The endpoint to give the UI or the CLI, e.g. ``http://127.0.0.1:8081``."""
        if not self._port:
            raise RuntimeError("the codec server is not started")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    # ------------------------------------------------------------------ requests

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            # A caller that stops sending must not hold a connection (and stop()) forever.
            async with asyncio.timeout(self._request_seconds):
                await self._serve_one(reader, writer)
        except (
            ConnectionError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _MAX_HEADER_BYTES:
            await _respond(writer, 431, {"error": "headers too large"})
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            await _respond(writer, 400, {"error": "malformed request line"})
            return
        method, target, _version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        path = target.split("?", 1)[0]
        cors = self._cors(headers)
        status, count = 200, 0
        answer: dict[str, Any] | str | None = {}
        extra: dict[str, str] = {}
        operation = _operation(path)
        try:
            if method == "GET" and path.rstrip("/") in ("", "/health"):
                answer = {"ok": True}
            elif path.rstrip("/").endswith("/login"):
                status, answer, extra = await self._login(method, reader, headers)
            elif operation is None:
                raise _Refusal(404, "POST payloads to /decode or /encode")
            elif method == "OPTIONS":
                if not cors:
                    raise _Refusal(403, "this origin is not allowed (BILLING_CODEC_SERVER_ORIGINS)")
                status, answer = 204, None
                extra = {
                    "Access-Control-Allow-Methods": "POST, OPTIONS",
                    "Access-Control-Allow-Headers": _ALLOWED_HEADERS,
                    "Access-Control-Max-Age": "600",
                }
            elif method != "POST":
                raise _Refusal(405, "POST payloads here", {"Allow": "POST, OPTIONS"})
            else:
                self._authorise(headers)
                payloads = await _read_payloads(reader, headers)
                count = len(payloads.payloads)
                answer = await self._apply(operation, payloads)
        except _Refusal as refusal:
            status, answer, extra = refusal.status, {"error": str(refusal)}, refusal.headers
        # Health checks come every few seconds: only at DEBUG.
        level = logging.DEBUG if operation is None and status == 200 else logging.INFO
        log.log(level, "codec %s %s -> %d (%d payloads)", method, path, status, count)
        await _respond(writer, status, answer, {**cors, **extra})

    async def _login(
        self, method: str, reader: asyncio.StreamReader, headers: dict[str, str]
    ) -> tuple[int, str, dict[str, str]]:
        """``GET``: the form; ``POST`` with the right token: the browser's session cookie."""
        if method == "GET":
            return 200, _LOGIN_FORM.format(message="Sign in to decode payloads."), {}
        if method != "POST":
            raise _Refusal(405, "GET or POST /login", {"Allow": "GET, POST"})
        body = await _read_body(reader, headers, limit=4096)
        token = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0]
        if not hmac.compare_digest(token.strip().encode(), self._token):
            return 401, _LOGIN_FORM.format(message="That is not the token."), {}
        cookie = (
            f"{SESSION_COOKIE}={self._session}; Path=/; HttpOnly; SameSite=Strict; "
            f"Max-Age={_SESSION_SECONDS}"
        )
        if headers.get("x-forwarded-proto") == "https":
            cookie += "; Secure"
        message = "Signed in: the Temporal UI decodes through this server now."
        return 200, _LOGIN_FORM.format(message=html.escape(message)), {"Set-Cookie": cookie}

    def _cors(self, headers: dict[str, str]) -> dict[str, str]:
        origin = headers.get("origin", "").rstrip("/")
        if not origin or origin not in self._origins:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }

    def _authorise(self, headers: dict[str, str]) -> None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        session = _cookies(headers.get("cookie", "")).get(SESSION_COOKIE, "")
        # Constant-time: the comparison must not tell how much of a guess was right.
        bearer = scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self._token
        )
        if not bearer and not hmac.compare_digest(session.encode(), self._session.encode()):
            raise _Refusal(
                401,
                "a valid bearer token (or a session from /login) is required",
                {"WWW-Authenticate": 'Bearer realm="codec"'},
            )
        namespace = headers.get("x-namespace")
        if namespace and namespace != self._namespace:
            raise _Refusal(403, f"this codec server serves namespace {self._namespace!r}")

    async def _apply(self, operation: str, payloads: Payloads) -> dict[str, Any]:
        try:
            if operation == "decode":
                result = await self._codec.decode(payloads.payloads)
            else:
                result = await self._codec.encode(payloads.payloads)
        except PayloadKeyError as err:
            raise _Refusal(400, str(err)) from None
        answer: dict[str, Any] = json_format.MessageToDict(Payloads(payloads=result))
        answer.setdefault("payloads", [])
        return answer


def _operation(path: str) -> str | None:
    """``decode`` or ``encode`` for ``/decode``, ``/prefix/encode``...; None otherwise."""
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return last if last in ("decode", "encode") else None


def _cookies(header: str) -> dict[str, str]:
    pairs = (item.strip().partition("=") for item in header.split(";"))
    return {name: value for name, sep, value in pairs if sep}


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], limit: int = _MAX_BODY_BYTES
) -> bytes:
    if "content-length" not in headers:
        raise _Refusal(411, "Content-Length required")
    try:
        length = int(headers["content-length"])
    except ValueError:
        raise _Refusal(400, "bad Content-Length") from None
    if not 0 <= length <= limit:
        raise _Refusal(413, "body too large")
    return await reader.readexactly(length)


async def _read_payloads(reader: asyncio.StreamReader, headers: dict[str, str]) -> Payloads:
    body = await _read_body(reader, headers)
    payloads = Payloads()
    try:
        json_format.Parse(body, payloads, ignore_unknown_fields=True)
    except (json_format.ParseError, UnicodeDecodeError):
        raise _Refusal(400, 'expected {"payloads": [...]} as JSON') from None
    return payloads


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    answer: dict[str, Any] | str | None,
    headers: dict[str, str] | None = None,
) -> None:
    """JSON for a dict, an HTML page for a string, no body for None."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    if answer is None:
        body = b""
    elif isinstance(answer, str):
        body = answer.encode()
        lines.append("Content-Type: text/html; charset=utf-8")
    else:
        body = json.dumps(answer).encode()
        lines.append("Content-Type: application/json")
    lines += [f"Content-Length: {len(body)}", "Connection: close", "Cache-Control: no-store"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()
