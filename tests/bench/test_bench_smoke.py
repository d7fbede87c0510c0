"""Each benchmark's ``--smoke`` mode still runs and writes the figures it promises.

The scripts start their own dev server (free ports) and PostgreSQL schema, so these tests
need PostgreSQL and the ``temporal`` binary; they write their JSON to a temporary path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

BENCH = Path(__file__).resolve().parents[2] / "bench"

EXPECTED: dict[str, dict[str, Any]] = {
    "close": {
        "top": {"periods", "floor", "close", "plain_sql", "ratio_to_floor", "ratio_to_plain_sql"},
        "close": {"invoices_per_second", "latency_p50_seconds", "latency_p99_seconds"},
    },
    "ingest": {
        "top": {"signals", "direct", "ratio_to_direct"},
        "signals": {"events_per_second", "replay_added"},
        "direct": {"events_per_second", "replay_added"},
    },
    "fee_edit": {
        "top": {"idle", "during_close"},
        "idle": {"p50_ms", "p99_ms"},
        "during_close": {"p50_ms", "p99_ms"},
    },
    "month_end": {
        "top": {"subscriptions", "usage_events", "month_end", "check", "ok"},
        "month_end": {
            "invoices_per_second",
            "seconds",
            "usage_send_seconds",
            "start_all_seconds",
            "cpu_seconds",
        },
        "check": {"subscriptions_with_one_finalized_invoice", "subscriptions_with_one_webhook"},
    },
    "codec": {"top": {"payloads_per_period", "encode_us_per_period_median"}},
    "retime": {
        "top": {"drafts", "store", "signals"},
        "store": {"found", "find_seconds", "recompute_seconds", "found_again"},
        "signals": {"nudged", "nudge_seconds", "all_moved_seconds", "not_moved"},
    },
    "memory": {
        "top": {"worker", "memory", "history"},
        "memory": {"worker_rss_before_kib", "points"},
        "history": {"current_run_history_events", "runs", "usage_events"},
    },
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_smoke_mode_writes_its_figures(name: str, tmp_path: Path, postgres_server_url: str) -> None:
    output = tmp_path / f"{name}.json"
    completed = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), "--smoke", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=110,
        env={**os.environ, "BILLING_TEST_POSTGRES_URL": postgres_server_url},
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    result = json.loads(output.read_text())
    assert result["benchmark"] == name
    expected = EXPECTED[name]
    assert expected["top"] <= set(result), set(result)
    for section, keys in expected.items():
        if section != "top":
            assert keys <= set(result[section]), (section, set(result[section]))
    if name == "ingest":
        assert result["signals"]["replay_added"] == 0
        assert result["direct"]["replay_added"] == 0
    if name == "month_end":
        # Each subscription: one finalized invoice with the total the bench computed from
        # its events, one invoice.created webhook; usage send accepted every event.
        assert result["ok"], result["check"]
        assert result["check"]["wrong_totals"] == 0
        assert result["check"]["subscriptions_with_one_webhook"] == result["subscriptions"]
        assert result["month_end"]["usage_send"]["accepted"] == result["usage_events"]
        assert set(result["month_end"]["cpu_seconds"]) == {
            "cli_processes",
            "worker_processes",
            "dev_server",
            "postgres",
        }
    if name == "retime":
        # Every draft found, moved once, and found no more; every nudge reached a workflow.
        assert result["store"]["found"] == result["store"]["drafts"]
        assert result["store"]["moved_to_the_new_deadline"] == result["store"]["drafts"]
        assert result["store"]["found_again"] == 0
        signals = result["signals"]
        assert signals["nudged"] == signals["drafts"] and signals["not_moved"] == 0
        assert signals["missing"] == 0 and signals["failed"] == 0
        assert signals["grace_period_changed_entries"] == signals["drafts"]
    if name == "memory":
        assert all(p["kib_per_open_period"] is not None for p in result["memory"]["points"])
