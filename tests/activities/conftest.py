"""Fixtures of the activity tests (the database fixtures come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from starter.webhook_sink import WebhookSink
from tests.activities.webhook_support import SECRET


@pytest_asyncio.fixture
async def sink() -> AsyncIterator[WebhookSink]:
    """A webhook receiver on a free local port that knows the test endpoint's secret."""
    receiver = WebhookSink(secret=SECRET)
    await receiver.start("127.0.0.1", 0)
    try:
        yield receiver
    finally:
        await receiver.stop()
