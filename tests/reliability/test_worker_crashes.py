"""The worker process (``billing worker``) SIGKILLed at random moments while 20 periods
draft and finalize, on the dev server and a fresh PostgreSQL schema, then restarted: every
invoice is finalized exactly once with gapless numbers, no coupon or credit is applied
twice, every webhook is delivered and accepted once, no usage event is lost; the worker's
output never shows the database password or the webhook secret.

Builds on tests/deploy/test_topology.py (same catalog and process helper); that test kills
one of three workers, this one kills the only worker repeatedly.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from billing.models import InvoiceStatus, UsageEvent
from services.catalog import load_catalog
from services.coupons import apply_coupon, get_wallet, top_up_wallet
from services.invoices import list_invoices
from services.webhooks import list_deliveries
from starter.periods import start_period
from starter.webhook_sink import WebhookSink
from store.db import make_engine
from tests.deploy.test_topology import SECRET, WorkerProcesses, catalog, wait_for_pollers
from tests.fixtures.database import migrated_schema
from tests.reliability.support import counts
from workflows.messages import AddUsage, BillingPeriodInput

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.e2e, pytest.mark.fault]

PASSWORD = "S3cretPW"
PERIODS = 20
EVENTS_PER_PERIOD = 30
USAGE_KILLS = 3  # while late usage arrives during the grace period
FINALIZE_KILLS = 2  # while the grace periods end and invoices are finalized
# Longer than the usage rounds take (a few seconds), so every batch is late usage that
# the draft accepts; a batch after finalization is refused by design, not lost.
GRACE_SECONDS = (15, 20)
# March, not January: the dev server is shared with tests/deploy, whose periods use
# the same subscription ids for January, and a completed period is never started again.
MARCH = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))


@pytest.fixture
def crash_database_url(postgres_server_url: str) -> Iterator[str]:
    # With a password in the URL (trust auth ignores it), so the logs can be searched for it.
    server_url = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:5432/test"
    with migrated_schema(server_url, "crash") as url:
        yield url


async def test_worker_sigkilled_repeatedly_loses_and_doubles_nothing(
    dev_env: WorkflowEnvironment, crash_database_url: str, tmp_path: Path
) -> None:
    rng = random.Random(8)
    client = dev_env.client
    task_queue = f"crash-{uuid.uuid4()}"
    engine = make_engine(crash_database_url)
    sink = WebhookSink(secret=SECRET)
    await sink.start("127.0.0.1", 0)
    data = catalog(sink.url, PERIODS)
    data["coupons"] = [
        {
            "code": "c5",
            "name": "Five",
            "coupon_type": "fixed_amount",
            "amount_cents": 500,
            "frequency": "once",
        }
    ]
    data["wallets"] = [
        {"customer_external_id": f"cust_{i}", "initial_balance_cents": 0}
        for i in range(0, PERIODS, 3)
    ]
    load_catalog(engine, data)
    couponed = [f"cust_{i}" for i in range(0, PERIODS, 2)]
    for customer in couponed:
        apply_coupon(
            engine,
            customer_external_id=customer,
            coupon_code="c5",
            applied_coupon_id=f"ac-{customer}",
        )
    wallets = [f"cust_{i}" for i in range(0, PERIODS, 3)]
    for customer in wallets:
        top_up_wallet(
            engine,
            customer_external_id=customer,
            amount_cents=300,
            transaction_id=f"top-{customer}",
        )

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "BILLING_"))}
    env |= {
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": client.namespace,
        "BILLING_TASK_QUEUE": task_queue,
        "BILLING_DATABASE_URL": crash_database_url,
        "BILLING_DATA_DIR": str(tmp_path / "data"),
        "BILLING_LOG_LEVEL": "DEBUG",
    }
    workers = WorkerProcesses(env, tmp_path)
    handles: list[WorkflowHandle[Any, Any]] = []
    kills = 0
    try:
        workers.start(1)
        await wait_for_pollers(client, task_queue, {workers.identity(0)})

        async def kill_and_restart(pause: tuple[float, float]) -> None:
            nonlocal kills
            await asyncio.sleep(rng.uniform(*pause))
            process = workers.processes[-1]
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            kills += 1
            log = tmp_path / f"worker-{len(workers.processes) - 1}.log"
            log.rename(tmp_path / f"killed-{kills}.log")  # the next start reuses the index
            workers.processes.clear()
            workers.start(1)

        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(PERIODS):
            handle = await start_period(
                client,
                BillingPeriodInput(
                    subscription_external_id=f"sub_{i}",
                    period_start=MARCH[0],
                    period_end=MARCH[1],
                    grace_period_seconds=rng.randint(*GRACE_SECONDS),
                    refresh_debounce_seconds=0,
                    webhook_retry_window_seconds=300,
                ),
                task_queue=task_queue,
            )
            handles.append(handle)
        for k in range(USAGE_KILLS):
            for i, handle in enumerate(handles):  # usage batches keep arriving meanwhile
                events = [
                    UsageEvent(
                        transaction_id=f"e-{i}-{k}-{n}",
                        external_subscription_id=f"sub_{i}",
                        code="api_calls",
                        timestamp=datetime(2026, 3, 15, tzinfo=UTC),
                    )
                    for n in range(EVENTS_PER_PERIOD // USAGE_KILLS)
                ]
                await handle.signal("add_usage", AddUsage(events=events))
            await kill_and_restart((0.2, 1.5))
        usage_took = loop.time() - started
        assert usage_took < GRACE_SECONDS[0], f"usage rounds took {usage_took:.1f} s"
        await asyncio.sleep(GRACE_SECONDS[0] - usage_took)
        for _ in range(FINALIZE_KILLS):
            await kill_and_restart((0.5, 2.5))
        async with asyncio.timeout(150):
            results = await asyncio.gather(*(h.result() for h in handles))
            await sink.wait_for(PERIODS, timeout=60)
    except BaseException:
        print(workers.logs())
        raise
    finally:
        workers.stop()
        await sink.stop()

    try:
        assert kills == USAGE_KILLS + FINALIZE_KILLS
        # Finalized exactly once each, gapless numbers per billing entity.
        assert [r.status for r in results] == [InvoiceStatus.FINALIZED] * PERIODS
        invoices = list_invoices(engine)
        assert len(invoices) == PERIODS
        assert {i.status for i in invoices} == {InvoiceStatus.FINALIZED}
        numbers: dict[str, list[int]] = defaultdict(list)
        for invoice in invoices:
            prefix, _, digits = (invoice.number or "").rpartition("-")
            numbers[prefix].append(int(digits))
        for prefix, sequence in numbers.items():
            assert sorted(sequence) == list(range(1, len(sequence) + 1)), prefix

        # No usage event lost or doubled: every sent event is one row, one unit.
        table = counts(engine)
        assert table["usage_events"] == PERIODS * EVENTS_PER_PERIOD
        assert table["rejected_events"] == 0
        with engine.connect() as connection:
            refused = connection.execute(text("SELECT kind, reason FROM rejected_inputs")).all()
        assert refused == []
        by_sub = {i.subscription_external_id: i for i in invoices}
        for i in range(PERIODS):
            fees = {f.code: f for f in by_sub[f"sub_{i}"].fees}
            assert fees["api_calls"].units == EVENTS_PER_PERIOD

        # Coupons consumed once each; credits debited once each.
        assert table["coupon_consumptions"] == len(couponed)
        for invoice in invoices:
            expected = 500 if invoice.customer_external_id in couponed else 0
            assert invoice.coupons_amount_cents == expected, invoice
            credit = 300 if invoice.customer_external_id in wallets else 0
            assert invoice.prepaid_credit_amount_cents == credit, invoice
        for customer in wallets:
            assert get_wallet(engine, customer).balance_cents == 0
        with engine.connect() as connection:
            debits = connection.execute(
                text(
                    "SELECT customer_external_id, count(*) FROM wallet_transactions"
                    " WHERE kind = 'invoice' GROUP BY customer_external_id"
                )
            ).all()
        assert sorted(debits) == sorted((c, 1) for c in wallets)  # one debit each

        # Every webhook delivered and accepted exactly once after dedup.
        deliveries = list_deliveries(engine)
        assert len(deliveries) == PERIODS
        assert {d.status for d in deliveries} == {"succeeded"}
        assert sorted(r.webhook_id or "" for r in sink.accepted) == sorted(d.id for d in deliveries)
        assert all(r.verified for r in sink.accepted)

        # The worker's own output (DEBUG) never shows a secret.
        output = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("*.log"))
        assert "worker polling" in output
        assert PASSWORD not in output
        assert SECRET not in output
    finally:
        engine.dispose()
