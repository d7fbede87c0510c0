"""Engines and migrations for SQLite (development, tests) and PostgreSQL (production).

SQLite is made safe for several writers (worker processes, CLI) by starting every
transaction with ``BEGIN IMMEDIATE``: the write lock is taken up front, so two
finalizations can never interleave and ``busy_timeout`` makes the second one wait
instead of failing. PostgreSQL relies on row locks (``SELECT ... FOR UPDATE``) instead.

Example::

    engine = make_engine("sqlite:///data/billing.db")
    upgrade("sqlite:///data/billing.db")
"""

from __future__ import annotations

import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url

__all__ = ["MIGRATIONS_DIR", "alembic_config", "make_engine", "upgrade"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
IDLE_PING_SECONDS = 5.0  # PostgreSQL connections idle longer are pinged before use


class _DecimalSum:
    """Exact ``SUM`` over decimal text (SQLite has no decimal type)."""

    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: Any) -> None:
        number = _to_decimal(value)
        if number is not None:
            self.total = number if self.total is None else self.total + number

    def finalize(self) -> str | None:
        return None if self.total is None else format(self.total, "f")


class _DecimalMax:
    """Exact ``MAX`` over decimal text (text comparison would put "9" above "10")."""

    def __init__(self) -> None:
        self.best: Decimal | None = None

    def step(self, value: Any) -> None:
        number = _to_decimal(value)
        if number is not None and (self.best is None or number > self.best):
            self.best = number

    def finalize(self) -> str | None:
        return None if self.best is None else format(self.best, "f")


def _to_decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _prepare_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN instead of the driver.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
        dbapi_connection.create_aggregate("decimal_sum", 1, _DecimalSum)
        dbapi_connection.create_aggregate("decimal_max", 1, _DecimalMax)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        _prepare_sqlite(engine)
        return engine
    engine = create_engine(url, **kwargs)
    _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: Engine) -> None:
    """Pre-ping (as ``pool_pre_ping``) only the connections idle for ``IDLE_PING_SECONDS``.

    The connections that go stale (a database restart, an idle timeout of the server or of
    the network) are the idle ones: those are checked and replaced before use as before.
    A connection checked in moments ago skips the round trip that ``pool_pre_ping`` paid on
    every unit of work; if the database failed within those moments, the first statement
    fails, SQLAlchemy invalidates the pool, and the caller's retry (every store activity
    retries) gets fresh connections.
    """
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in_at = record.info.get("checked_in_at")  # None: a fresh connection
        if checked_in_at is None or time.monotonic() - checked_in_at < IDLE_PING_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as err:
            if not dialect.is_disconnect(err, dbapi_connection, None):
                raise
            # As pool_pre_ping does: replace this and every older pooled connection.
            raise exc.InvalidatePoolError() from err


def alembic_config(url: str) -> Config:
    """Alembic configuration built in code: no ``alembic.ini`` needed."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (the latest by default)."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()
