"""PostgreSQL engines ping a pooled connection before use only when it has been idle."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from store import db
from store.db import make_engine

pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres_engine(postgres_server_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_server_url, pool_size=1, max_overflow=0)
    try:
        yield engine
    finally:
        engine.dispose()


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    pings: list[Any] = []
    do_ping = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return do_ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


def test_a_connection_used_moments_ago_is_not_pinged(
    postgres_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = _pings(postgres_engine, monkeypatch)
    first = _backend_pid(postgres_engine)
    assert _backend_pid(postgres_engine) == first
    assert pings == []


def test_an_idle_connection_killed_by_the_server_is_replaced_before_use(
    postgres_engine: Engine, postgres_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = _pings(postgres_engine, monkeypatch)
    killed = _backend_pid(postgres_engine)
    admin = create_engine(postgres_server_url)
    try:
        with admin.begin() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed})
    finally:
        admin.dispose()
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)  # every pooled connection is idle
    assert _backend_pid(postgres_engine) != killed  # no error: pinged, then replaced
    assert len(pings) == 1
