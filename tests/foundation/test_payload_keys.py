"""Payload keys from configuration: what is accepted, what fails at start and how it says so.

And the codec itself: round trip, rotation, plain payloads passing through, tampering.
Bad keys are also tried on the real ``billing`` commands: they exit 2 with the reason
before starting anything (the worker never polls, the CLI never connects).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes
from temporalio.testing import WorkflowEnvironment

from config.codec import (
    ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    PayloadKey,
    PayloadKeyError,
    data_converter,
    parse_payload_keys,
    payload_codec,
    payload_keys,
)
from config.settings import Settings
from config.temporal import connect
from tests.reliability.support import free_port
from worker import ACTIVITY_THREADS, build_worker

ROOT = Path(__file__).resolve().parents[2]
SECRET_A = base64.b64encode(b"A" * 32).decode()
SECRET_B = base64.b64encode(b"B" * 32).decode()
SHORT = base64.b64encode(b"S" * 16).decode()  # AES-128 length: refused


def settings(**values: object) -> Settings:
    return Settings(**values)  # type: ignore[arg-type]


def test_keys_are_read_newest_first() -> None:
    keys = parse_payload_keys(f"k2:{SECRET_B}, k1:{SECRET_A}", "BILLING_PAYLOAD_KEYS")
    assert [key.key_id for key in keys] == ["k2", "k1"]
    assert keys[0].secret == b"B" * 32
    assert SECRET_B not in repr(keys) and "BBBB" not in repr(keys)  # never in a log line


def test_a_key_file_may_list_one_key_per_line(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"k2:{SECRET_B}\nk1:{SECRET_A}\n")
    from_file = payload_keys(settings(BILLING_PAYLOAD_KEYS_FILE=str(path)))
    from_env = payload_keys(settings(BILLING_PAYLOAD_KEYS=f"k2:{SECRET_B},k1:{SECRET_A}"))
    assert from_file == from_env
    both = settings(
        BILLING_PAYLOAD_KEYS=f"k2:{SECRET_B},k1:{SECRET_A}", BILLING_PAYLOAD_KEYS_FILE=str(path)
    )
    assert payload_keys(both) == from_env  # the same keys twice: consistent


def test_encryption_is_off_without_keys() -> None:
    assert payload_codec(settings()) is None
    assert payload_codec(settings(BILLING_PAYLOAD_KEYS="", BILLING_PAYLOAD_KEYS_FILE="")) is None
    assert data_converter(settings()) is pydantic_data_converter


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        (",", "holds no key"),
        (SECRET_A, "entry 1: expected KEY_ID:BASE64_KEY"),
        (f":{SECRET_A}", "entry 1: expected KEY_ID:BASE64_KEY"),
        ("k1:", "entry 1: expected KEY_ID:BASE64_KEY"),
        (f"k 1:{SECRET_A}", "entry 1: the key id must be"),
        (f"k1:{SECRET_A},k2:not*base64!", "entry 2 (key id 'k2'): the key is not valid base64"),
        (f"k1:{SECRET_A[:-1]}", "entry 1 (key id 'k1'): the key is not valid base64"),
        (f"k1:{SHORT}", "the key is 16 bytes, AES-256 needs 32"),
        (f"k1:{SECRET_A},k1:{SECRET_B}", "entry 2 (key id 'k1'): the key id is listed twice"),
    ],
)
def test_bad_keys_are_refused_with_the_reason(keys: str, reason: str) -> None:
    with pytest.raises(PayloadKeyError, match=r"^BILLING_PAYLOAD_KEYS") as refused:
        payload_codec(settings(BILLING_PAYLOAD_KEYS=keys))
    message = str(refused.value)
    assert reason in message
    for secret in (SECRET_A, SECRET_B, SHORT, SECRET_A[:-1]):
        assert secret not in message  # the key material never reaches an error or a log


def test_inconsistent_variables_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"k1:{SECRET_A}\n")
    with pytest.raises(PayloadKeyError, match="both set and hold different keys"):
        payload_keys(
            settings(BILLING_PAYLOAD_KEYS=f"k2:{SECRET_B}", BILLING_PAYLOAD_KEYS_FILE=str(path))
        )
    with pytest.raises(PayloadKeyError, match=r"BILLING_PAYLOAD_KEYS_FILE \(.*missing\): cannot"):
        payload_keys(settings(BILLING_PAYLOAD_KEYS_FILE=str(tmp_path / "missing")))


def codec(*entries: tuple[str, str]) -> EncryptionCodec:
    return EncryptionCodec([PayloadKey(key_id, base64.b64decode(key)) for key_id, key in entries])


async def test_payloads_round_trip_sealed_under_the_newest_key() -> None:
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"amount_cents":4777}')
    (sealed,) = await codec(("k2", SECRET_B), ("k1", SECRET_A)).encode([plain])
    assert sealed.metadata["encoding"] == ENCODING and sealed.metadata[KEY_ID_METADATA] == b"k2"
    assert b"4777" not in sealed.data and b"json/plain" not in sealed.data
    (again,) = await codec(("k2", SECRET_B), ("k1", SECRET_A)).encode([plain])
    assert again.data != sealed.data  # a fresh nonce per payload
    assert await codec(("k3", SECRET_A), ("k2", SECRET_B)).decode([sealed]) == [plain]


async def test_decoding_needs_the_key_that_sealed_the_payload() -> None:
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b"{}")
    (sealed,) = await codec(("k1", SECRET_A)).encode([plain])
    with pytest.raises(PayloadKeyError, match=r"key id 'k1', which is not among .* \(k2\)"):
        await codec(("k2", SECRET_B)).decode([sealed])
    with pytest.raises(PayloadKeyError, match="does not decrypt"):
        await codec(("k1", SECRET_B)).decode([sealed])  # same id, another key
    tampered = Payload()
    tampered.CopyFrom(sealed)
    tampered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(PayloadKeyError, match="does not decrypt"):
        await codec(("k1", SECRET_A)).decode([tampered])


async def test_payloads_stored_in_clear_still_decode() -> None:
    """Turning encryption on must not break periods whose histories are in clear."""
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"a":1}')
    assert await codec(("k1", SECRET_A)).decode([plain]) == [plain]


def test_the_converter_seals_failure_messages_too() -> None:
    converter = data_converter(settings(BILLING_PAYLOAD_KEYS=f"k1:{SECRET_A}"))
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert isinstance(converter.failure_converter, DefaultFailureConverterWithEncodedAttributes)
    assert converter.payload_converter_class is pydantic_data_converter.payload_converter_class


async def test_the_worker_keeps_the_clients_codec(temporal_env: WorkflowEnvironment) -> None:
    """The worker shares one payload converter between runs; the codec must stay on."""
    address = temporal_env.client.service_client.config.target_host
    client = await connect(
        settings(TEMPORAL_ADDRESS=address, BILLING_PAYLOAD_KEYS=f"k1:{SECRET_A}")
    )
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import sqlalchemy

    with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS) as executor:
        async with httpx.AsyncClient() as http:
            worker = build_worker(
                client,
                sqlalchemy.create_engine("sqlite://"),
                http,
                task_queue="unused",
                executor=executor,
            )
    converter = worker.config()["client"].data_converter
    assert converter.payload_codec is client.data_converter.payload_codec
    assert converter.payload_converter_class() is converter.payload_converter_class()


async def test_connect_refuses_bad_keys_before_connecting() -> None:
    nothing_listens = f"127.0.0.1:{free_port()}"
    with pytest.raises(PayloadKeyError, match="AES-256 needs 32"):
        await connect(
            settings(TEMPORAL_ADDRESS=nothing_listens, BILLING_PAYLOAD_KEYS=f"k1:{SHORT}")
        )


@pytest.mark.parametrize(
    "command",
    [
        ["worker"],
        ["dev"],
        ["codec-server"],
        ["invoice", "show", "sub_x", "--period-start", "2026-01-01"],
        ["usage", "send", "--subscription", "sub_x", "--code", "api_calls"],
    ],
    ids=lambda argv: argv[0],
)
def test_commands_refuse_bad_keys_at_start(command: list[str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "BILLING_"))}
    env |= {
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # nothing listens: it must not matter
        "BILLING_DATA_DIR": str(tmp_path),
        "BILLING_PAYLOAD_KEYS": f"new:{SECRET_B},old:{SHORT}",
        "BILLING_CODEC_SERVER_TOKEN": "t",
    }
    result = subprocess.run(
        [sys.executable, "-m", "starter.cli", *command],
        cwd=ROOT,
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert result.stderr.strip() == (
        "error: BILLING_PAYLOAD_KEYS, entry 2 (key id 'old'): the key is 16 bytes, AES-256 "
        "needs 32 (make one with `openssl rand -base64 32`)"
    )
    assert "Traceback" not in result.stderr and SHORT not in result.stderr + result.stdout
    assert not (tmp_path / "temporal.db").exists()  # `billing dev` started nothing


async def test_the_worker_says_which_key_encrypts_and_never_the_key(
    dev_env: WorkflowEnvironment, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio
    import logging

    from store.db import upgrade
    from worker import run_worker

    caplog.set_level(logging.DEBUG)
    worker_settings = settings(
        TEMPORAL_ADDRESS=dev_env.client.service_client.config.target_host,
        BILLING_TASK_QUEUE=f"keys-{os.getpid()}-{id(tmp_path)}",
        BILLING_DATABASE_URL=f"sqlite:///{tmp_path / 'billing.db'}",
        BILLING_PAYLOAD_KEYS=f"k2:{SECRET_B},k1:{SECRET_A}",
    )
    upgrade(worker_settings.database_url)
    stop = asyncio.Event()
    running = asyncio.create_task(run_worker(worker_settings, stop=stop))
    try:
        for _ in range(200):
            if "worker polling" in caplog.text:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
    await asyncio.wait_for(running, timeout=30)
    assert "payloads encrypted with key 'k2' (2 keys to read)" in caplog.text
    assert SECRET_A not in caplog.text and SECRET_B not in caplog.text


async def test_histories_in_clear_replay_once_encryption_is_on() -> None:
    """Periods running when encryption is turned on continue: their clear payloads decode."""
    from collections.abc import AsyncIterator

    from temporalio.client import WorkflowHistory
    from temporalio.worker import Replayer

    from tests.workflows.test_replay import HISTORY_FILES, WORKFLOWS, load
    from worker import workflow_runner

    async def histories() -> AsyncIterator[WorkflowHistory]:
        for path in HISTORY_FILES:
            yield load(path)

    replayer = Replayer(
        workflows=WORKFLOWS,
        data_converter=data_converter(settings(BILLING_PAYLOAD_KEYS=f"k1:{SECRET_A}")),
        workflow_runner=workflow_runner(False),
    )
    results = await replayer.replay_workflows(histories(), raise_on_replay_failure=False)
    assert len(HISTORY_FILES) >= 6
    assert {run: str(f) for run, f in results.replay_failures.items() if f} == {}
