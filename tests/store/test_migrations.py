"""The first migration creates every table and the immutability triggers, on both dialects."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, inspect, text

from store.db import alembic_config, make_engine, upgrade
from store.schema import Base

EXPECTED_TABLES = {
    "billing_entities",
    "customers",
    "billable_metrics",
    "plans",
    "charges",
    "subscriptions",
    "usage_events",
    "rejected_events",
    "rejected_inputs",
    "invoices",
    "fees",
    "adjusted_fees",
    "coupons",
    "applied_coupons",
    "coupon_consumptions",
    "wallets",
    "wallet_transactions",
    "invoice_sequences",
    "webhook_endpoints",
    "webhook_deliveries",
}


def _triggers(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
        else:
            rows = connection.execute(
                text(
                    "SELECT DISTINCT trigger_name FROM information_schema.triggers "
                    "WHERE trigger_schema = current_schema()"
                )
            )
        return {row[0] for row in rows}


def test_upgrade_creates_every_table_and_the_triggers(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert tables >= EXPECTED_TABLES
    assert set(Base.metadata.tables) <= tables
    triggers = _triggers(engine)
    assert "invoices_immutable_after_finalization" in triggers
    assert any(name.startswith("fees_") for name in triggers)
    assert any(name.startswith("adjusted_fees_") for name in triggers)


def test_upgrade_is_idempotent_and_reversible(database_url: str) -> None:
    upgrade(database_url)  # already at head: nothing to do
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            config = alembic_config(database_url)
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert not EXPECTED_TABLES & set(inspect(engine).get_table_names())
        upgrade(database_url)
        assert set(inspect(engine).get_table_names()) >= EXPECTED_TABLES
        assert "invoices_immutable_after_finalization" in _triggers(engine)
    finally:
        engine.dispose()


def test_sqlite_engine_settings(tmp_path: object) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/settings.db")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    finally:
        engine.dispose()


def test_0005_gives_receipts_a_period_and_keeps_the_old_ones(database_url: str) -> None:
    # A receipt written under 0004 survives 0005 without a period, and 0005 goes down
    # again keeping it.
    engine = make_engine(database_url)
    config = alembic_config(database_url)
    insert_receipt = text(
        "INSERT INTO usage_receipts (key, accepted, duplicates, rejected, created_at) "
        "VALUES ('step/1', 2, 0, '[]', '2026-12-01 00:00:00+00:00')"
    )
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0004")
        columns = {c["name"] for c in inspect(engine).get_columns("usage_receipts")}
        assert "period_start" not in columns
        with engine.begin() as connection:
            connection.execute(insert_receipt)
        upgrade(database_url)
        inspector = inspect(engine)
        columns = {c["name"] for c in inspector.get_columns("usage_receipts")}
        assert {"subscription_external_id", "period_start"} <= columns
        indexes = {i["name"] for i in inspector.get_indexes("usage_receipts")}
        assert "ix_usage_receipts_period" in indexes
        with engine.connect() as connection:
            row = connection.execute(
                text("SELECT key, subscription_external_id, period_start FROM usage_receipts")
            ).one()
        assert tuple(row) == ("step/1", None, None)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0004")
        with engine.connect() as connection:
            keys = connection.execute(text("SELECT key FROM usage_receipts")).scalars().all()
        assert keys == ["step/1"]
        upgrade(database_url)
    finally:
        engine.dispose()
