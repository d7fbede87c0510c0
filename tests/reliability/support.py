"""Shared helpers of the fault and bad-input tests: a module-wide period harness on its own
database (tests/fixtures/periods.py), store snapshots, and bounded waiting."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, text
from temporalio.testing import WorkflowEnvironment

from store.db import make_engine, upgrade
from tests.fixtures.periods import PeriodHarness, period_harness

__all__ = ["counts", "free_port", "module_harness", "snapshot", "until"]

T = TypeVar("T")

COUNTED_TABLES = (
    "usage_events",
    "rejected_events",
    "invoices",
    "fees",
    "adjusted_fees",
    "applied_coupons",
    "coupon_consumptions",
    "wallet_transactions",
    "webhook_deliveries",
)


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table: int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
            for table in COUNTED_TABLES
        }


def snapshot(engine: Engine) -> dict[str, Any]:
    """What bad input must never change: usage, invoices, fees and adjustments."""
    with engine.connect() as connection:
        return {
            "usage": sorted(
                tuple(r)
                for r in connection.execute(
                    text("SELECT subscription_external_id, transaction_id, code FROM usage_events")
                )
            ),
            "invoices": sorted(
                tuple(str(v) for v in r)
                for r in connection.execute(
                    text("SELECT id, status, number, total_amount_cents FROM invoices")
                )
            ),
            "fees": sorted(
                tuple(str(v) for v in r)
                for r in connection.execute(text("SELECT invoice_id, code, amount_cents FROM fees"))
            ),
            "adjusted": int(
                connection.execute(text("SELECT count(*) FROM adjusted_fees")).scalar_one()
            ),
        }


async def until(
    probe: Callable[[], Awaitable[T]],
    predicate: Callable[[T], bool],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until ``predicate`` holds; fail with the last value after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value: Any = None
    while True:
        with contextlib.suppress(Exception):
            value = await probe()
            if predicate(value):
                return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s; last: {value!r}")
        await asyncio.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def module_harness(
    env: WorkflowEnvironment, directory: Path, *, database_url: str | None = None
) -> AsyncIterator[PeriodHarness]:
    """A worker and the period test catalog on a fresh database (SQLite by default)."""
    url = database_url or f"sqlite:///{directory / 'billing.db'}"
    if database_url is None:
        upgrade(url)
    engine = make_engine(url)
    try:
        async with period_harness(env, engine, threads=16) as harness:
            yield harness
    finally:
        engine.dispose()
