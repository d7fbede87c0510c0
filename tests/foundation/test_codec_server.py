"""The codec server over real HTTP: decodes for the token's holder, refuses everyone else.

Requests are shaped as the Temporal UI sends them (JSON ``{"payloads": [...]}`` with base64
fields, ``X-Namespace``, CORS preflight from the UI's origin). The last test runs
``billing codec-server`` as a process and reads its output: no payload, no token.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.api.common.v1 import Payload

from config.codec import EncryptionCodec, PayloadKey
from starter.codec_server import SESSION_COOKIE, CodecServer
from tests.reliability.support import free_port

ROOT = Path(__file__).resolve().parents[2]
KEY = os.urandom(32)
TOKEN = "tok_" + base64.urlsafe_b64encode(os.urandom(24)).decode()
UI = "http://localhost:8233"
SECRET_TEXT = b'{"customer":"Zyxwv Confidential","amount_cents":987654}'


def as_json(payload: Payload) -> dict[str, Any]:
    """A payload as the Temporal UI sends it: protobuf JSON, bytes in base64."""
    return {
        "metadata": {k: base64.b64encode(v).decode() for k, v in payload.metadata.items()},
        "data": base64.b64encode(payload.data).decode(),
    }


def from_json(item: dict[str, Any]) -> Payload:
    return Payload(
        metadata={k: base64.b64decode(v) for k, v in item.get("metadata", {}).items()},
        data=base64.b64decode(item.get("data", "")),
    )


def plain() -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=SECRET_TEXT)


@pytest.fixture
def codec() -> EncryptionCodec:
    return EncryptionCodec([PayloadKey("k1", KEY)])


@pytest_asyncio.fixture
async def server(codec: EncryptionCodec) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        CodecServer(codec, token=TOKEN, namespace="billing", origins=[UI]) as running,
        httpx.AsyncClient(base_url=running.url) as http,
    ):
        yield http


def authorised(**extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", "X-Namespace": "billing", **extra}


async def sealed(codec: EncryptionCodec) -> dict[str, Any]:
    return {"payloads": [as_json(p) for p in await codec.encode([plain(), plain()])]}


async def test_an_authorised_caller_sees_payloads_in_clear(
    server: httpx.AsyncClient, codec: EncryptionCodec
) -> None:
    answer = await server.post("/decode", json=await sealed(codec), headers=authorised())
    assert answer.status_code == 200
    assert [from_json(p) for p in answer.json()["payloads"]] == [plain(), plain()]


async def test_encode_then_decode_round_trips(server: httpx.AsyncClient) -> None:
    body = {"payloads": [as_json(plain())]}
    encoded = await server.post("/encode", json=body, headers=authorised())
    assert encoded.status_code == 200
    (item,) = encoded.json()["payloads"]
    assert base64.b64decode(item["metadata"]["encoding"]) == b"binary/encrypted"
    assert SECRET_TEXT not in base64.b64decode(item["data"])
    decoded = await server.post("/decode", json=encoded.json(), headers=authorised())
    assert [from_json(p) for p in decoded.json()["payloads"]] == [plain()]


@pytest.mark.parametrize(
    "authorization",
    [None, "", f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer"],
    ids=["none", "empty", "basic", "longer", "shorter", "blank"],
)
async def test_callers_without_the_token_are_refused(
    server: httpx.AsyncClient, codec: EncryptionCodec, authorization: str | None
) -> None:
    headers = {"X-Namespace": "billing", "Origin": UI}
    if authorization is not None:
        headers["Authorization"] = authorization
    for operation in ("/decode", "/encode"):
        answer = await server.post(operation, json=await sealed(codec), headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.headers["access-control-allow-origin"] == UI  # the UI can show why
        assert set(answer.json()) == {"error"}
        assert "Zyxwv" not in answer.text


async def test_a_browser_signs_in_once_and_the_ui_decodes_with_its_cookie(
    server: httpx.AsyncClient, codec: EncryptionCodec
) -> None:
    """The Temporal UI cannot send our token; with "Include cross-origin credentials" it
    sends the cookie that /login set in the same browser."""
    form = await server.get("/login")
    assert form.status_code == 200 and 'name="token"' in form.text
    wrong = await server.post("/login", data={"token": "guess"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    signed_in = await server.post("/login", data={"token": TOKEN})
    assert signed_in.status_code == 200
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and TOKEN not in cookie
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {p.strip() for p in cookie.split(";")}
    session = cookie.split(";")[0].split("=", 1)[1]
    body = await sealed(codec)
    ui = {"Origin": UI, "X-Namespace": "billing", "Cookie": f"{SESSION_COOKIE}={session}"}
    answer = await server.post("/decode", json=body, headers=ui)
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == UI
    assert [from_json(p) for p in answer.json()["payloads"]] == [plain(), plain()]
    other = "1" if session[-1] == "0" else "0"
    forged = ui | {"Cookie": f"{SESSION_COOKIE}={session[:-1]}{other}"}
    assert (await server.post("/decode", json=body, headers=forged)).status_code == 401
    behind_tls = await server.post(
        "/login", data={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"}
    )
    assert "Secure" in behind_tls.headers["set-cookie"]


async def test_another_namespace_is_refused(
    server: httpx.AsyncClient, codec: EncryptionCodec
) -> None:
    answer = await server.post(
        "/decode", json=await sealed(codec), headers=authorised(**{"X-Namespace": "other"})
    )
    assert answer.status_code == 403 and "'billing'" in answer.json()["error"]


async def test_the_ui_origin_gets_its_cors_preflight(server: httpx.AsyncClient) -> None:
    preflight = await server.options(
        "/decode",
        headers={
            "Origin": UI,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
        },
    )
    assert preflight.status_code == 204
    headers = preflight.headers
    assert headers["access-control-allow-origin"] == UI
    assert headers["access-control-allow-credentials"] == "true"
    assert "POST" in headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-namespace"} <= allowed


async def test_other_origins_get_no_cors_headers(
    server: httpx.AsyncClient, codec: EncryptionCodec
) -> None:
    evil = "http://evil.example"
    preflight = await server.options(
        "/decode", headers={"Origin": evil, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers
    answer = await server.post("/decode", json=await sealed(codec), headers=authorised(Origin=evil))
    # A browser on that origin cannot read the answer without this header.
    assert "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b'{"payloads": "x"}', 400),
        (b'{"payloads": [{"data": 5}]}', 400),
        (b'{"payloads": [1]}', 400),
    ],
)
async def test_malformed_requests_get_a_clear_answer(
    server: httpx.AsyncClient, body: bytes, status: int
) -> None:
    answer = await server.post("/decode", content=body, headers=authorised())
    assert answer.status_code == status and "error" in answer.json()


async def test_payloads_of_an_unknown_key_are_refused_by_name(server: httpx.AsyncClient) -> None:
    other = EncryptionCodec([PayloadKey("k9", os.urandom(32))])
    body = {"payloads": [as_json(p) for p in await other.encode([plain()])]}
    answer = await server.post("/decode", json=body, headers=authorised())
    assert answer.status_code == 400 and "'k9'" in answer.json()["error"]


async def test_a_silent_caller_is_cut_off(codec: EncryptionCodec) -> None:
    async with CodecServer(codec, token=TOKEN, namespace="billing", request_seconds=0.3) as running:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(b"POST /decode HTTP/1.1\r\n")  # ... and nothing more
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""  # closed by the server
        writer.close()


async def test_health_and_unknown_routes(server: httpx.AsyncClient) -> None:
    assert (await server.get("/health")).status_code == 200
    assert (await server.post("/nothing", json={}, headers=authorised())).status_code == 404
    assert (await server.get("/decode", headers=authorised())).status_code == 405


async def test_payloads_and_tokens_are_never_logged(
    server: httpx.AsyncClient, codec: EncryptionCodec, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = await sealed(codec)
    await server.post("/decode", json=body, headers=authorised())
    await server.post("/decode", json=body, headers={"Authorization": "Bearer wrong"})
    assert "codec POST /decode -> 200 (2 payloads)" in caplog.text
    assert "codec POST /decode -> 401" in caplog.text
    for secret in ("Zyxwv", TOKEN, body["payloads"][0]["data"][:40], "wrong"):
        assert secret not in caplog.text


@pytest.fixture
def codec_server_process() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "BILLING_"))}
    env |= {
        "BILLING_PAYLOAD_KEYS": f"k1:{base64.b64encode(KEY).decode()}",
        "BILLING_CODEC_SERVER_TOKEN": TOKEN,
        "BILLING_CODEC_SERVER_PORT": str(port),
        "TEMPORAL_NAMESPACE": "billing",
        "BILLING_LOG_LEVEL": "DEBUG",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "starter.cli", "codec-server"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, "the codec server did not start"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


async def test_billing_codec_server_serves_the_ui_and_logs_no_payload(
    codec_server_process: tuple[str, subprocess.Popen[str]], codec: EncryptionCodec
) -> None:
    url, process = codec_server_process
    body = await sealed(codec)
    async with httpx.AsyncClient(base_url=url) as http:
        refused = await http.post("/decode", json=body, headers={"X-Namespace": "billing"})
        answer = await http.post("/decode", json=body, headers=authorised(Origin=UI))
    assert refused.status_code == 401
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == UI
    assert [from_json(p) for p in answer.json()["payloads"]] == [plain(), plain()]
    process.send_signal(signal.SIGINT)
    output, _ = await asyncio.to_thread(process.communicate, timeout=10)
    assert "codec server at http://127.0.0.1:" in output and "keys k1" in output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    served = [line for line in lines if line["logger"] == "billing.codec_server"]
    assert [line["message"] for line in served if line["level"] == "INFO"] == [
        "codec POST /decode -> 401 (0 payloads)",
        "codec POST /decode -> 200 (2 payloads)",
    ]
    for secret in (
        "Zyxwv",
        TOKEN,
        body["payloads"][0]["data"][:40],
        base64.b64encode(KEY).decode(),
    ):
        assert secret not in output
