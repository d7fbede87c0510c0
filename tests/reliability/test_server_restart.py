"""The Temporal dev server stopped and restarted (persistent database file) while periods
are in their grace period: every period resumes and finalizes, once, with its webhook."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from billing.models import InvoiceStatus
from config.binaries import temporal_cli
from config.temporal import dev_server_search_attribute_flags
from services.invoices import list_invoices
from services.webhooks import list_deliveries
from tests.fixtures.periods import workflow_task_failures
from tests.reliability.support import free_port, module_harness, until

pytestmark = [pytest.mark.fault, pytest.mark.integration]

SUBSCRIPTIONS = ["sub_pro", "sub_skip_paid", "sub_finalize"]
GRACE_SECONDS = 10


class DevServer:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.command = [
            str(temporal_cli()),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--ui-port",
            str(free_port()),
            "--db-filename",
            str(directory / "t.db"),
            "--log-level",
            "error",
            *dev_server_search_attribute_flags(),
        ]
        self.log = directory / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    async def connect(self) -> Client:
        async def attempt() -> Client:
            return await Client.connect(self.address, data_converter=pydantic_data_converter)

        client: Client = await until(attempt, lambda c: True, timeout=30, what="dev server")
        return client


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[DevServer]:
    server = DevServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_periods_resume_after_a_server_restart(dev_server: DevServer, tmp_path: Path) -> None:
    client = await dev_server.connect()
    env: Any = SimpleNamespace(client=client)
    async with module_harness(env, tmp_path) as harness:
        handles = [
            await harness.start(name, grace_period_seconds=GRACE_SECONDS) for name in SUBSCRIPTIONS
        ]
        for handle in handles:
            await harness.wait_for_draft(handle)

        dev_server.stop()  # in the grace period: timers and history live in t.db
        await asyncio.sleep(2)
        dev_server.start()
        await dev_server.connect()

        async def result(handle: Any) -> Any:
            while True:  # the first long poll may break on the restart
                with contextlib.suppress(Exception):
                    return await handle.result()
                await asyncio.sleep(0.5)

        results = await asyncio.wait_for(asyncio.gather(*(result(h) for h in handles)), 90)
        await harness.sink.wait_for(len(SUBSCRIPTIONS), timeout=30)
        assert [r.status for r in results] == [InvoiceStatus.FINALIZED] * len(SUBSCRIPTIONS)
        invoices = list_invoices(harness.engine)
        assert len(invoices) == len(SUBSCRIPTIONS)
        assert sorted(i.number or "" for i in invoices) == sorted(r.number or "" for r in results)
        deliveries = list_deliveries(harness.engine)
        assert {d.status for d in deliveries} == {"succeeded"}
        assert len(harness.sink.accepted) == len(SUBSCRIPTIONS)
        for handle in handles:
            assert await workflow_task_failures(handle) == []
