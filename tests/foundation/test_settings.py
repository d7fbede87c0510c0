"""Settings: embedded defaults, environment overrides, secrets kept secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import DEFAULT_TASK_QUEUE, Settings

ENV = (
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "BILLING_TASK_QUEUE",
    "BILLING_DATABASE_URL",
    "BILLING_DATA_DIR",
    "TEMPORAL_API_KEY",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def test_defaults_run_everything_locally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.temporal_address == "127.0.0.1:7233"
    assert settings.temporal_namespace == "default"
    assert settings.task_queue == DEFAULT_TASK_QUEUE
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'billing.db'}"
    assert (settings.temporal_host, settings.temporal_port) == ("127.0.0.1", 7233)


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", "temporal.internal:7934")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "billing-prod")
    monkeypatch.setenv("BILLING_TASK_QUEUE", "periods-eu")
    monkeypatch.setenv("BILLING_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("BILLING_DATABASE_URL", "postgresql+psycopg://billing:pw@db/billing")
    settings = Settings()
    assert settings.temporal_port == 7934
    assert settings.temporal_namespace == "billing-prod"
    assert settings.task_queue == "periods-eu"
    assert settings.data_dir == tmp_path / "state"
    assert settings.database_url == "postgresql+psycopg://billing:pw@db/billing"


def test_secrets_do_not_show_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_DATABASE_URL", "postgresql+psycopg://billing:S3cret@db/billing")
    monkeypatch.setenv("TEMPORAL_API_KEY", "key-S3cret")
    settings = Settings()
    assert "S3cret" not in repr(settings)
    assert "S3cret" not in str(settings.model_dump())
