"""A close of 100 periods on 2 worker processes, one SIGKILLed mid-close and restarted
(``bench/close.py --kill-worker-after``): every invoice is finalized exactly once with
gapless numbers, and every webhook arrives once after the receiver's dedupe by webhook id.

The run takes a minute or more whatever its size: the store activities the killed worker
held are retried only when their 60 s start-to-close timeout passes.

The checks themselves (bench/_fault.py ``exactly_once``) are shown to catch each kind of
fault on ledgers with that fault put in by hand.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
PERIODS = 100
KILL_AFTER = 30


@pytest.fixture(scope="module")
def fault() -> ModuleType:
    """bench/_fault.py (the bench scripts import each other from their own directory)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("_fault")
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.integration
@pytest.mark.postgres
@pytest.mark.e2e
@pytest.mark.fault
@pytest.mark.timeout(280)
def test_a_worker_killed_mid_close_loses_and_doubles_nothing(
    tmp_path: Path, postgres_server_url: str
) -> None:
    output = tmp_path / "close.json"
    command = [
        sys.executable,
        str(BENCH / "close.py"),
        *("--periods", str(PERIODS), "--worker-processes", "2"),
        *("--kill-worker-after", str(KILL_AFTER), "--grace", "1", "--timeout", "200"),
        *("--skip-floor", "--skip-plain-sql", "--output", str(output)),
    ]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=270,
        env={**os.environ, "BILLING_TEST_POSTGRES_URL": postgres_server_url},
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    result = json.loads(output.read_text())
    fault = result["fault"]
    assert fault["problems"] == []
    # The kill happened mid-close and interrupted work that Temporal then did again.
    assert KILL_AFTER <= fault["kill"]["webhooks_at_kill"] < PERIODS
    assert fault["repeated_work"]["periods_with_repeated_work"] > 0
    assert fault["workflows"] == {"completed": PERIODS}
    # Exactly once: one finalized invoice per period, numbers 1..100, one webhook each.
    assert fault["invoices_by_status"] == {"finalized": PERIODS}
    assert fault["numbers_by_billing_entity"] == {
        "bench": {
            "numbers": PERIODS,
            "first": 1,
            "last": PERIODS,
            "gaps": 0,
            "duplicates": 0,
            "sequence_last_number": PERIODS,
        }
    }
    assert fault["receiver_distinct_webhook_ids"] == PERIODS
    assert fault["copies_after_dedupe"] == PERIODS
    assert fault["receiver_requests"] == PERIODS + fault["redeliveries"]


# --------------------------------------------------------------------------- the checks


def clean(periods: int = 3) -> tuple[list[str], dict[str, list[dict[str, Any]]], list[Any]]:
    """A ledger and receiver log of ``periods`` periods closed exactly once."""
    subscriptions = [f"sub_{i}" for i in range(periods)]
    invoices = [
        {
            "id": f"inv_{i}",
            "subscription_external_id": s,
            "billing_entity_code": "bench",
            "status": "finalized",
            "number": f"BENCH-{i + 1:06d}",
        }
        for i, s in enumerate(subscriptions)
    ]
    deliveries = [
        {
            "id": f"wh_{i}",
            "invoice_id": f"inv_{i}",
            "webhook_type": "invoice.created",
            "status": "succeeded",
            "attempts": 1,
        }
        for i in range(periods)
    ]
    received = [
        {
            "type": "invoice.created",
            "subscription": s,
            "invoice_id": f"inv_{i}",
            "webhook_id": f"wh_{i}",
            "verified": True,
            "accepted": True,
            "duplicate": False,
            "at": float(i),
        }
        for i, s in enumerate(subscriptions)
    ]
    ledger = {
        "invoices": invoices,
        "sequences": [{"billing_entity_code": "bench", "last_number": periods}],
        "deliveries": deliveries,
    }
    return subscriptions, ledger, received


def test_a_close_done_exactly_once_passes(fault: ModuleType) -> None:
    subscriptions, ledger, received = clean()
    figures, problems = fault.exactly_once(subscriptions, ledger, received)
    assert problems == []
    assert figures["copies_after_dedupe"] == 3
    assert figures["redeliveries"] == 0


def test_a_redelivery_of_the_same_webhook_is_counted_not_refused(fault: ModuleType) -> None:
    subscriptions, ledger, received = clean()
    received.append({**received[1], "duplicate": True})
    figures, problems = fault.exactly_once(subscriptions, ledger, received)
    assert problems == []
    assert figures["redeliveries"] == 1
    assert figures["receiver_requests"] == 4
    assert figures["copies_after_dedupe"] == 3


def test_a_gap_in_the_numbers_is_found(fault: ModuleType) -> None:
    subscriptions, ledger, received = clean()
    ledger["invoices"][2]["number"] = "BENCH-000004"
    ledger["sequences"][0]["last_number"] = 4
    figures, problems = fault.exactly_once(subscriptions, ledger, received)
    assert figures["numbers_by_billing_entity"]["bench"]["gaps"] == 1
    assert any("gaps in the numbers of bench: 1: 3" in p for p in problems), problems
    assert any("sequence of bench stands at 4" in p for p in problems), problems


def test_a_number_used_twice_is_found(fault: ModuleType) -> None:
    subscriptions, ledger, received = clean()
    ledger["invoices"][2]["number"] = "BENCH-000002"
    _, problems = fault.exactly_once(subscriptions, ledger, received)
    assert any("numbers of bench used twice: 1: 2" in p for p in problems), problems


def test_an_invoice_left_draft_or_doubled_is_found(fault: ModuleType) -> None:
    subscriptions, ledger, received = clean()
    ledger["invoices"][0] |= {"status": "draft", "number": "BENCH-DRAFT"}
    ledger["invoices"].append({**ledger["invoices"][1], "id": "inv_1b"})
    _, problems = fault.exactly_once(subscriptions, ledger, received)
    assert any(p.startswith("invoices not finalized: 1: inv_0 draft") for p in problems), problems
    assert any(p.startswith("periods with several invoices: 1: sub_1") for p in problems), problems


def test_two_different_webhooks_for_one_invoice_are_found(fault: ModuleType) -> None:
    subscriptions, ledger, received = clean()
    received.append({**received[0], "webhook_id": "wh_other"})
    _, problems = fault.exactly_once(subscriptions, ledger, received)
    assert any("two different webhooks: 1: inv_0" in p for p in problems), problems
    assert any("one copy after dedupe by webhook id: 1: inv_0 2" in p for p in problems), problems


def test_a_webhook_that_never_arrived_is_found(fault: ModuleType) -> None:
    subscriptions, ledger, received = clean()
    del received[2]
    ledger["deliveries"][1]["status"] = "failed"
    _, problems = fault.exactly_once(subscriptions, ledger, received)
    assert any("webhook never arrived: 1: inv_2" in p for p in problems), problems
    assert any("deliveries not succeeded: 1: wh_1 failed" in p for p in problems), problems
