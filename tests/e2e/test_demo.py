"""``billing dev --demo --exit-after-demo``: the README's first command, end to end.

It brings up its own embedded stack (dev server, sink, worker) on free ports in a fresh
data folder, runs the demo twice (the second run must report, not crash), and checks the
story it tells: periods launched, usage routed, a finalized invoice whose webhook was
received and verified, and an empty invoice closed under the skip setting.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "starter.cli", "dev", "--demo", "--exit-after-demo"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_demo_runs_and_reruns(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BILLING_", "TEMPORAL_"))},
        "BILLING_DATA_DIR": str(tmp_path / "data"),
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "BILLING_UI_PORT": str(free_port()),
        "BILLING_WEBHOOK_SINK_PORT": str(free_port()),
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "200",
    }
    first = run_demo(env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    assert "demo stopped" not in out
    assert "billing-period/sub_northwind_growth/" in out and ": started" in out
    this_month = datetime.now(UTC).date().replace(day=1)
    # last month's events (one late, one with a typo'd code) and one for this month's period
    assert "7 accepted, 0 duplicate, 1 rejected" in out
    assert f"billing-period/sub_northwind_growth/{this_month.isoformat()}" in out
    assert "sub_northwind_growth: finalized as ACME-" in out
    assert "sub_koala_payg: closed" in out
    assert "received by the sink: yes, signature verified: yes" in out
    assert "BillingCustomer = 'cust_northwind'" in out
    records = [
        json.loads(line) for line in (tmp_path / "data" / "webhooks.jsonl").read_text().splitlines()
    ]
    created = [r for r in records if json.loads(r["body"])["webhook_type"] == "invoice.created"]
    assert created and all(r["verified"] is True for r in created)

    second = run_demo(env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "was finalized by an earlier run" in second.stdout
    assert "is finalized: it can no longer change" in second.stdout
    assert "sub_northwind_growth: finalized as ACME-" in second.stdout
