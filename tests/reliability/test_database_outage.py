"""PostgreSQL connections failing for a while: the worker reaches the database through a
local TCP proxy the test controls; the proxy cuts every connection and refuses new ones for
a few seconds, then comes back. Activities retry; nothing is duplicated, nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text
from temporalio.testing import WorkflowEnvironment

from billing.models import InvoiceStatus
from services.invoices import list_invoices
from services.webhooks import list_deliveries
from store.db import make_engine, upgrade
from tests.fixtures.periods import workflow_task_failures
from tests.reliability.support import counts, free_port, module_harness
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import AddUsage, FinalizeInvoice

pytestmark = [pytest.mark.fault, pytest.mark.postgres]

SUBSCRIPTIONS = ["sub_pro", "sub_skip_paid", "sub_finalize"]
OUTAGE_SECONDS = 4.0


class TcpProxy:
    """127.0.0.1:<port> -> 127.0.0.1:5432 on its own thread and event loop (the store's
    synchronous calls must never block the loop that forwards their bytes)."""

    def __init__(self, target_port: int = 5432) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)  # type: ignore[arg-type]

    def start(self) -> None:
        self.thread.start()
        self.up()

    def up(self) -> None:
        async def listen() -> None:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

        self._call(listen())

    def cut(self) -> None:
        """Refuse new connections and reset every open one."""

        async def cut() -> None:
            assert self.server is not None
            self.server.close()
            for writer in list(self.writers):
                writer.transport.abort()
            self.writers.clear()
            await self.server.wait_closed()

        self._call(cut())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}


@pytest.fixture
def proxied(postgres_server_url: str) -> Iterator[tuple[str, str, TcpProxy]]:
    """(direct URL, URL through the proxy, the proxy) of a fresh, migrated schema."""
    schema = f"outage_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    options = f"options={quote(f'-csearch_path={schema}')}"
    direct = f"{postgres_server_url}?{options}"
    proxy = TcpProxy()
    proxy.start()
    try:
        upgrade(direct)
        through = direct.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        assert through != direct
        yield direct, through, proxy
    finally:
        proxy.stop()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


async def test_database_outage_retries_without_loss_or_duplicates(
    temporal_env: WorkflowEnvironment, proxied: tuple[str, str, TcpProxy], tmp_path: Path
) -> None:
    direct_url, proxy_url, proxy = proxied
    direct = make_engine(direct_url)
    async with module_harness(temporal_env, tmp_path, database_url=proxy_url) as harness:
        handles = [await harness.start(name) for name in SUBSCRIPTIONS]
        for handle in handles:
            await harness.wait_for_draft(handle)
        jan = datetime(2026, 1, 20, tzinfo=UTC)

        def batch(name: str, start: int) -> AddUsage:
            return AddUsage(
                events=[
                    harness.event(f"{name}-{n}", "api_calls", jan, sub=name)
                    for n in range(start, start + 10)
                ]
            )

        used = proxy.connections
        proxy.cut()
        try:
            for name, handle in zip(SUBSCRIPTIONS, handles, strict=True):
                await handle.signal("add_usage", batch(name, 0))
                await handle.signal("add_usage", batch(name, 0))  # resent
                await handle.signal("add_usage", batch(name, 10))
            await asyncio.sleep(OUTAGE_SECONDS)
            # Nothing got through during the outage: the store calls are failing and retrying.
            assert counts(direct)["usage_events"] == 0
        finally:
            proxy.up()
        for handle in handles:
            await handle.signal(BillingPeriodWorkflow.finalize_invoice, FinalizeInvoice())
        results = []
        for handle in handles:
            results.append(await asyncio.wait_for(handle.result(), 120))
        await harness.sink.wait_for(len(SUBSCRIPTIONS), timeout=30)
        for handle in handles:
            assert await workflow_task_failures(handle) == []

    try:
        assert proxy.connections > used  # the store reconnected through the proxy
        assert [r.status for r in results] == [InvoiceStatus.FINALIZED] * len(SUBSCRIPTIONS)
        for result in results:
            assert {f.code: f.units for f in result.fees}["api_calls"] == 20
        table = counts(direct)
        assert table["usage_events"] == 20 * len(SUBSCRIPTIONS)
        assert table["invoices"] == len(SUBSCRIPTIONS)
        invoices = list_invoices(direct)
        assert sorted(i.number or "" for i in invoices) == sorted(r.number or "" for r in results)
        deliveries = list_deliveries(direct)
        assert len(deliveries) == len(SUBSCRIPTIONS)
        assert {d.status for d in deliveries} == {"succeeded"}
        assert sorted(r.webhook_id or "" for r in harness.sink.accepted) == sorted(
            d.id for d in deliveries
        )
    finally:
        direct.dispose()
