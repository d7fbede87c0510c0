"""Security: webhook signatures refuse replayed and tampered deliveries; secrets (webhook
endpoint secret, database password) never show in logs, CLI output or workflow histories.

The worker subprocess's output is checked for both secrets in test_worker_crashes.py.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text
from temporalio.testing import WorkflowEnvironment

from billing.models import InvoiceStatus
from billing.signature import sign, verify_signature
from tests.fixtures.periods import SECRET
from tests.reliability.support import free_port, module_harness
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import AddUsage, FinalizeInvoice

pytestmark = [pytest.mark.fault]

ROOT = Path(__file__).resolve().parents[2]
BILLING = Path(sys.executable).with_name("billing")
PASSWORD = "S3cretPW"
WEBHOOK_SECRET = "whsec_Sup3rSecretEndpointKey"
NOW = 1_790_000_000
BODY = b'{"webhook_type":"invoice.created","object_type":"invoice","invoice":{"total":100}}'


# --------------------------------------------------------------------------- signatures


def test_a_fresh_signed_delivery_verifies() -> None:
    signature = sign(WEBHOOK_SECRET, NOW, BODY)
    assert verify_signature(WEBHOOK_SECRET, BODY, NOW, signature, now=NOW + 299)
    assert verify_signature(WEBHOOK_SECRET, BODY.decode(), NOW, f" {signature.upper()} ", now=NOW)


@pytest.mark.parametrize(
    ("body", "timestamp", "signature_of", "now", "secret"),
    [
        pytest.param(BODY, NOW, (NOW, BODY), NOW + 301, WEBHOOK_SECRET, id="replayed-late"),
        pytest.param(BODY, NOW, (NOW, BODY), NOW + 86_400, WEBHOOK_SECRET, id="replayed-a-day"),
        pytest.param(BODY, NOW, (NOW, BODY), NOW - 301, WEBHOOK_SECRET, id="from-the-future"),
        pytest.param(BODY, NOW + 600, (NOW, BODY), NOW + 600, WEBHOOK_SECRET, id="fresh-ts"),
        pytest.param(
            BODY.replace(b"100", b"1"), NOW, (NOW, BODY), NOW, WEBHOOK_SECRET, id="amount-tamper"
        ),
        pytest.param(BODY + b" ", NOW, (NOW, BODY), NOW, WEBHOOK_SECRET, id="trailing-byte"),
        pytest.param(BODY, NOW, (NOW, BODY), NOW, "whsec_other", id="wrong-secret"),
        pytest.param(BODY, NOW, (NOW, BODY), NOW, "", id="empty-secret"),
    ],
)
def test_replayed_or_tampered_deliveries_are_refused(
    body: bytes, timestamp: int, signature_of: tuple[int, bytes], now: int, secret: str
) -> None:
    signature = sign(WEBHOOK_SECRET, *signature_of)
    assert not verify_signature(secret, body, timestamp, signature, now=now)


@pytest.mark.parametrize(
    "signature",
    ["", "00", "sha256=", "not-hex-at-all", "0" * 64],
)
def test_forged_signatures_are_refused(signature: str) -> None:
    assert not verify_signature(WEBHOOK_SECRET, BODY, NOW, signature, now=NOW)


def test_truncated_signature_is_refused() -> None:
    signature = sign(WEBHOOK_SECRET, NOW, BODY)
    assert not verify_signature(WEBHOOK_SECRET, BODY, NOW, signature[:-1], now=NOW)
    assert not verify_signature(WEBHOOK_SECRET, BODY, NOW, signature + "0", now=NOW)


# --------------------------------------------------------------------------- CLI output


@pytest.fixture
def secret_database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema reached through a URL with a password (trust auth)."""
    schema = f"secrets_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = (
        f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:5432/test"
        f"?options=-csearch_path%3D{schema}"
    )
    try:
        yield url
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _cli(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        [str(BILLING), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90
    )
    return f"$ billing {' '.join(args)} -> {result.returncode}\n{result.stdout}{result.stderr}"


@pytest.mark.postgres
def test_secrets_never_appear_in_cli_output(secret_database_url: str, tmp_path: Path) -> None:
    from tests.fixtures.periods import period_catalog

    catalog = period_catalog("http://127.0.0.1:9/hook")
    catalog["webhook_endpoints"][0]["secret"] = WEBHOOK_SECRET
    good = tmp_path / "catalog.yaml"
    good.write_text(yaml.safe_dump(catalog))
    catalog["plans"][0]["amount_cents"] = -1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(catalog))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "BILLING_"))}
    env |= {
        "BILLING_DATABASE_URL": secret_database_url,
        "BILLING_DATA_DIR": str(tmp_path / "data"),
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # nothing listens there
        "BILLING_LOG_LEVEL": "DEBUG",
    }
    unreachable = env | {
        "BILLING_DATABASE_URL": secret_database_url.replace(":5432/", f":{free_port()}/")
    }
    outputs = [
        _cli(["--help"], env),
        _cli(["db", "upgrade"], env),
        _cli(["db", "upgrade"], env),
        _cli(["catalog", "load", str(good)], env),
        _cli(["catalog", "load", str(bad)], env),
        _cli(["webhook", "list"], env),
        _cli(["invoice", "list"], env),
        _cli(["db", "upgrade"], unreachable),
        _cli(["catalog", "load", str(good)], unreachable),
        _cli(["invoice", "show", "no-such-invoice"], env),
    ]
    everything = "\n".join(outputs)
    assert "database is up to date" in outputs[1], outputs[1]
    assert "loaded" in outputs[3], outputs[3]
    assert "plans[0]" in outputs[4], outputs[4]
    assert PASSWORD not in everything, everything
    assert WEBHOOK_SECRET not in everything, everything


# --------------------------------------------------------------------------- logs, histories


async def test_secrets_never_appear_in_logs_or_histories(
    temporal_env: WorkflowEnvironment, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with module_harness(temporal_env, tmp_path) as harness:
        handle = await harness.start("sub_pro")
        await harness.wait_for_draft(handle)
        from datetime import UTC, datetime

        jan = datetime(2026, 1, 9, tzinfo=UTC)
        await handle.execute_update(
            BillingPeriodWorkflow.add_usage_sync,
            AddUsage(events=[harness.event("s-1", "api_calls", jan)]),
        )
        harness.sink.fail_next(1)  # one retried delivery: attempts are logged too
        await handle.execute_update(BillingPeriodWorkflow.finalize_invoice_sync, FinalizeInvoice())
        final = await handle.result()
        assert final.status == InvoiceStatus.FINALIZED
        received = await harness.sink.wait_for(1, timeout=30)
        assert all(r.verified for r in received)  # the secret was really used to sign
        histories = []
        ids = [handle.id]  # invoice.created is delivered by an activity of the period
        for workflow_id in ids:
            history = await harness.client.get_workflow_handle(workflow_id).fetch_history()
            raw = history.to_json()
            # Payload data is base64 in the JSON form: decode every one, search both.
            decoded = [
                base64.b64decode(data).decode("utf-8", "replace")
                for data in re.findall(r'"data": "([A-Za-z0-9+/=]+)"', raw)
            ]
            histories.append(raw + "\n".join(decoded))
        text_of_histories = "\n".join(histories)
    assert final.number is not None and final.number in text_of_histories
    assert SECRET not in text_of_histories
    assert SECRET not in caplog.text
    assert json.dumps(SECRET)[1:-1] not in text_of_histories
