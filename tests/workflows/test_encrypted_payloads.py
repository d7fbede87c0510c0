"""Encrypted payloads on the real dev server: a whole period with the codec on.

One period runs its lifecycle (usage, draft, fee edits by an update and by the CLI, a
refused edit, finalize, webhook) through clients built by ``config.temporal.connect`` with
key A. Then its raw history, read by a client without the codec, must hold no invoice
line, amount, customer name or email, or usage property value; the same payloads sent to
the codec server come back in clear (so the markers were there to find); the history
replays with the keys rotated to "B,A", and not without A.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHandle, WorkflowHistory, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from billing.models import AdjustmentMode, Invoice, InvoiceStatus, UsageEvent
from config.binaries import temporal_cli
from config.codec import ENCODING, EncryptionCodec, data_converter, payload_codec
from config.settings import Settings
from config.temporal import connect
from starter.codec_server import CodecServer
from starter.periods import start_period
from store.db import make_engine, upgrade
from tests.fixtures.periods import period_catalog, running_stack
from worker import WORKFLOWS, workflow_runner
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import (
    AddUsage,
    BillingPeriodInput,
    EditFee,
    FinalizeInvoice,
    PeriodPhase,
)
from workflows.versions import PATCH_DRAFT_FINALIZES_WHEN_DUE as NEWEST_PATCH

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KEY_A = "key-a:" + base64.b64encode(os.urandom(32)).decode()
KEY_B = "key-b:" + base64.b64encode(os.urandom(32)).decode()
TOKEN = "codec-token-" + uuid.uuid4().hex
CUSTOMER_NAME = "Zyxwv Confidential Holdings"
CUSTOMER_EMAIL = "ap@zyxwv-confidential.example"
REGION = "zyxwv-secret-region"  # a usage property value that no metric aggregates
STORAGE_NAME = "Zyxwv encrypted storage"
SEATS_NAME = "Zyxwv premium seats"  # set by a fee edit's display name
JANUARY = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))


def settings(address: str, keys: str | None, **extra: Any) -> Settings:
    values: dict[str, Any] = {"TEMPORAL_ADDRESS": address, **extra}
    if keys is not None:
        values["BILLING_PAYLOAD_KEYS"] = keys
    return Settings(**values)


def catalog(webhook_url: str, suffix: str) -> dict[str, Any]:
    data = period_catalog(webhook_url, suffix)
    customer = next(c for c in data["customers"] if c["external_id"] == "cust_inherit")
    customer |= {"name": CUSTOMER_NAME, "email": CUSTOMER_EMAIL}
    metric = next(m for m in data["billable_metrics"] if m["code"] == "storage_gb")
    metric["name"] = STORAGE_NAME
    return data


def payloads_in(message: Message, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Payload]]:
    """Every ``Payload`` inside a protobuf message, with the path of fields leading to it."""
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if value_field.type != value_field.TYPE_MESSAGE:
                continue
            items = [(f"{field.name}[{key}]", item) for key, item in value.items()]
        elif field.is_repeated:
            items = [(f"{field.name}[{index}]", item) for index, item in enumerate(value)]
        else:
            items = [(field.name, value)]
        for name, item in items:
            if isinstance(item, Payload):
                yield "/".join((*path, name)), item
            else:
                yield from payloads_in(item, (*path, name))


def readable(history: WorkflowHistory) -> str:
    """The history as JSON plus every base64 field decoded: what a reader of the store sees."""
    raw = history.to_json()
    decoded = [
        base64.b64decode(data).decode("utf-8", "replace")
        for data in re.findall(r'"([A-Za-z0-9+/]{8,}={0,2})"', raw)
        if len(data) % 4 == 0
    ]
    return raw + "\n" + "\n".join(decoded)


@dataclass
class EncryptedPeriod:
    address: str
    client: Client  # with the codec (key A)
    invoice: Invoice
    history: WorkflowHistory  # read by a client without the codec
    webhooks: list[Any]
    cli_edit: dict[str, Any]
    refused: str


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starter.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest_asyncio.fixture(scope="module")
async def period(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[EncryptedPeriod]:
    address = dev_env.client.service_client.config.target_host
    client = await connect(settings(address, KEY_A))
    database_url = f"sqlite:///{tmp_path_factory.mktemp('codec') / 'billing.db'}"
    await asyncio.to_thread(upgrade, database_url)
    engine = make_engine(database_url)
    task_queue = f"codec-{uuid.uuid4()}"
    suffix = f"-{uuid.uuid4().hex[:8]}"
    subscription = f"sub_pro{suffix}"
    try:
        async with running_stack(
            client, engine, partial(catalog, suffix=suffix), task_queue=task_queue
        ) as sink:
            handle = await start_period(
                client,
                BillingPeriodInput(
                    subscription_external_id=subscription,
                    period_start=JANUARY[0],
                    period_end=JANUARY[1],
                    grace_period_seconds=3600,
                    refresh_debounce_seconds=0,
                ),
                task_queue=task_queue,
            )
            jan = datetime(2026, 1, 9, tzinfo=UTC)
            events = [
                UsageEvent(
                    transaction_id=f"t-{index}",
                    external_subscription_id=subscription,
                    code=code,
                    timestamp=jan,
                    properties=properties,
                )
                for index, (code, properties) in enumerate(
                    [
                        ("storage_gb", {"gb": "37.77", "region": REGION}),
                        ("api_calls", {"region": REGION}),
                        ("seats", {"seats": 3}),
                    ]
                )
            ]
            await handle.execute_update(
                BillingPeriodWorkflow.add_usage_sync, AddUsage(events=events)
            )
            await until_drafted(handle)
            await handle.execute_update(
                BillingPeriodWorkflow.edit_fee_sync,
                EditFee(
                    charge_code="seats",
                    mode=AdjustmentMode.DISPLAY_NAME,
                    display_name=SEATS_NAME,
                ),
            )
            with pytest.raises(WorkflowUpdateFailedError) as refusal:
                await handle.execute_update(
                    BillingPeriodWorkflow.edit_fee_sync,
                    EditFee(charge_code="no_such_charge", mode=AdjustmentMode.UNITS, units=1),
                )
            env = {
                **{
                    k: v
                    for k, v in os.environ.items()
                    if not k.startswith(("BILLING_", "TEMPORAL_"))
                },
                "TEMPORAL_ADDRESS": address,
                "BILLING_DATABASE_URL": database_url,
                "BILLING_TASK_QUEUE": task_queue,
                "BILLING_PAYLOAD_KEYS": KEY_A,
                "PYTHONPATH": str(ROOT),
            }
            code, out, err = await cli(
                env,
                *("fee", "edit", subscription, "--period-start", "2026-01-01"),
                *("--charge", "api_calls", "--units", "4321", "--json"),
            )
            assert code == 0, err
            cli_edit = json.loads(out)
            sink.fail_next(1)  # a failed attempt: its failure is stored with the retry
            invoice = await handle.execute_update(
                BillingPeriodWorkflow.finalize_invoice_sync, FinalizeInvoice()
            )
            assert await handle.result() == invoice
            webhooks = await sink.wait_for(2, timeout=30)
        # A client without the codec reads the history as the server stores it.
        history = await dev_env.client.get_workflow_handle(handle.id).fetch_history()
        cause = refusal.value.cause
        yield EncryptedPeriod(
            address,
            client,
            invoice,
            history,
            webhooks,
            cli_edit,
            str(getattr(cause, "message", cause)),
        )
    finally:
        engine.dispose()


async def until_drafted(handle: WorkflowHandle[Any, Any]) -> None:
    for _ in range(600):
        view = await handle.query(BillingPeriodWorkflow.invoice)
        if view.phase == PeriodPhase.DRAFT and view.invoice is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no draft; last view: {view}")


def markers(invoice: Invoice) -> list[str]:
    """What must not be readable in the stored history, as the payloads' JSON writes it."""
    found = [CUSTOMER_NAME, CUSTOMER_EMAIL, REGION, STORAGE_NAME, SEATS_NAME, "37.77"]
    found.append(f'"total_amount_cents":{invoice.total_amount_cents}')
    for fee in invoice.fees:
        found.append(f'"amount_cents":{fee.amount_cents}')
        found.append(f'"precise_amount":"{fee.precise_amount}"')
    return found


async def test_the_lifecycle_runs_with_the_codec_on(period: EncryptedPeriod) -> None:
    invoice = period.invoice
    assert invoice.status == InvoiceStatus.FINALIZED and invoice.number
    fees = {fee.code: fee for fee in invoice.fees}
    assert fees["storage_gb"].amount_cents == 4777  # 10 x 2 + 27.77 x 1
    assert fees["seats"].display_name == SEATS_NAME and fees["seats"].adjusted
    assert fees["api_calls"].units == Decimal(4321) and fees["api_calls"].amount_cents == 4321
    assert {fee["code"]: fee["units"] for fee in period.cli_edit["fees"]}["api_calls"] == "4321"
    assert "no_such_charge" in period.refused  # the refusal's message survives the codec
    failed, webhook = period.webhooks
    assert failed.response_status == 500 and webhook.accepted
    assert webhook.verified and webhook.payload()["invoice"]["number"] == invoice.number
    codec = period.client.data_converter.payload_codec
    assert isinstance(codec, EncryptionCodec) and codec.key_ids == ("key-a",)


async def test_the_stored_history_holds_only_ciphertext(period: EncryptedPeriod) -> None:
    stored = [item for event in period.history.events for item in payloads_in(event)]
    in_clear = {
        path: payload.data.decode()
        for path, payload in stored
        if payload.metadata.get("encoding") != ENCODING
    }
    # In clear by design: search attributes (indexed by the server), the SDK core's patch
    # markers (the patch's name) and its local-activity markers' bookkeeping (sequence,
    # attempt, activity type, times; their result is a payload of ours, sealed).
    assert {path.split("/")[0] for path in in_clear} == {
        "workflow_execution_started_event_attributes",
        "upsert_workflow_search_attributes_event_attributes",
        "marker_recorded_event_attributes",
    }
    bookkeeping = {"seq", "attempt", "activity_id", "activity_type", "complete_time"}
    bookkeeping |= {"backoff", "original_schedule_time", "activation_index"}
    for path, data in in_clear.items():
        assert (
            "search_attributes/indexed_fields" in path
            or ("details[patch-data]" in path and json.loads(data)["id"] == NEWEST_PATCH)
            or ("details[data]" in path and set(json.loads(data)) <= bookkeeping)
        ), (path, data)
    local_results = [path for path, _ in stored if "details[result]" in path]
    assert local_results and not set(local_results) & set(in_clear)
    sealed = [payload for path, payload in stored if path not in in_clear]
    assert len(sealed) > 20
    assert {payload.metadata["encryption-key-id"] for payload in sealed} == {b"key-a"}
    text = readable(period.history)
    for marker in markers(period.invoice):
        assert marker not in text, marker
    # Failure messages are sealed too: "Encoded failure" is all a reader without keys sees.
    assert "attempt 1 failed" not in text and "Encoded failure" in text
    # Search attributes hold ids, the status, number and total: never a name.
    attributes = "\n".join(in_clear.values())
    assert period.invoice.subscription_external_id in attributes
    assert period.invoice.number is not None and period.invoice.number in attributes
    assert CUSTOMER_NAME not in attributes and STORAGE_NAME not in attributes


def sealed_payloads(history: WorkflowHistory) -> list[Payload]:
    return [
        payload
        for event in history.events
        for _, payload in payloads_in(event)
        if payload.metadata.get("encoding") == ENCODING
    ]


async def test_the_codec_server_shows_the_history_in_clear(period: EncryptedPeriod) -> None:
    codec = payload_codec(settings(period.address, KEY_A))
    assert codec is not None
    stored = sealed_payloads(period.history)
    body = {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in stored
        ]
    }
    async with (
        CodecServer(codec, token=TOKEN, namespace="default") as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        if True:
            refused = await http.post("/decode", json=body, headers={"X-Namespace": "default"})
            answer = await http.post(
                "/decode",
                json=body,
                headers={"Authorization": f"Bearer {TOKEN}", "X-Namespace": "default"},
            )
    assert refused.status_code == 401 and "payloads" not in refused.json()
    assert answer.status_code == 200
    decoded = answer.json()["payloads"]
    assert len(decoded) == len(stored)
    text = "\n".join(
        base64.b64decode(p.get("data", "")).decode("utf-8", "replace") for p in decoded
    )
    for marker in markers(period.invoice):
        if marker not in (CUSTOMER_NAME, CUSTOMER_EMAIL):  # never put in a history at all
            assert marker in text, marker
    assert "attempt 1 failed" in text  # the failed webhook attempt's sealed message


async def test_the_temporal_cli_decodes_through_the_codec_server(
    period: EncryptedPeriod, caplog: pytest.LogCaptureFixture
) -> None:
    """Temporal's own client of the remote codec protocol, against our server."""
    codec = payload_codec(settings(period.address, KEY_A))
    assert codec is not None

    async def show(server: CodecServer, *auth: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            str(temporal_cli()),
            *("workflow", "show", "--workflow-id", period.history.workflow_id),
            *("--address", period.address, "--output", "json"),
            *("--codec-endpoint", server.url, *auth),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 60)
        return process.returncode or 0, out.decode()

    caplog.set_level(logging.INFO, logger="billing.codec_server")
    async with CodecServer(codec, token=TOKEN, namespace="default") as server:
        code, shown = await show(server, "--codec-auth", f"Bearer {TOKEN}")
        refused_code, refused = await show(server)
    assert code == 0, shown
    decoded = "\n".join(
        base64.b64decode(data).decode("utf-8", "replace")
        for data in re.findall(r'"([A-Za-z0-9+/]{8,}={0,2})"', shown)
        if len(data) % 4 == 0
    )
    assert SEATS_NAME in decoded and REGION in decoded  # the payloads' JSON, in clear
    assert "binary/encrypted" not in decoded
    assert refused_code != 0 and SEATS_NAME not in refused
    assert "codec POST /decode -> 401" in caplog.text


async def test_a_history_replays_after_the_key_is_rotated(
    period: EncryptedPeriod, caplog: pytest.LogCaptureFixture
) -> None:
    def replayer(keys: str) -> Replayer:
        return Replayer(
            workflows=list(WORKFLOWS),
            data_converter=data_converter(settings(period.address, keys)),
            workflow_runner=workflow_runner(False),
        )

    rotated = await replayer(f"{KEY_B},{KEY_A}").replay_workflow(
        period.history, raise_on_replay_failure=False
    )
    assert rotated.replay_failure is None
    without_a = await replayer(KEY_B).replay_workflow(period.history, raise_on_replay_failure=False)
    assert without_a.replay_failure is not None
    assert "key id 'key-a', which is not among the configured keys (key-b)" in caplog.text


async def test_a_client_without_the_keys_cannot_read_the_period(period: EncryptedPeriod) -> None:
    handle = await connect(settings(period.address, None))
    rotated = await connect(settings(period.address, f"{KEY_B},{KEY_A}"))
    workflow_id = period.history.workflow_id
    described = await rotated.get_workflow_handle_for(
        BillingPeriodWorkflow.run, workflow_id
    ).result()
    assert described == period.invoice  # new key first: old results still decode
    with pytest.raises(Exception, match="binary/encrypted"):
        await handle.get_workflow_handle_for(BillingPeriodWorkflow.run, workflow_id).result()
