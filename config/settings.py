"""Configuration from environment variables, with embedded defaults.

Every setting can be given as an environment variable of the same name in upper case
(``TEMPORAL_ADDRESS``, ``BILLING_DATABASE_URL``, ...). The defaults run everything on one
machine: the embedded Temporal dev server and a SQLite file in the data folder.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_TASK_QUEUE", "Settings"]

DEFAULT_TASK_QUEUE = "billing-periods"
# Workflow tasks a worker process takes at once. Few: a task a worker has taken waits, in
# arrival order, for the one thread that runs workflow code; a task it has not taken stays
# on the server, which hands out an operator's tasks first (task priority,
# starter.periods.give_operator_priority). A close is bound by CPU, not by this number.
WORKFLOW_TASK_SLOTS = 4


class Settings(BaseSettings):
    """Runtime settings of the worker, the CLI and `billing dev`."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    temporal_address: str = Field(default="127.0.0.1:7233", alias="TEMPORAL_ADDRESS")
    temporal_namespace: str = Field(default="default", alias="TEMPORAL_NAMESPACE")
    temporal_tls: bool = Field(default=False, alias="TEMPORAL_TLS")
    temporal_tls_cert: Path | None = Field(default=None, alias="TEMPORAL_TLS_CERT")
    temporal_tls_key: Path | None = Field(default=None, alias="TEMPORAL_TLS_KEY")
    temporal_api_key: SecretStr | None = Field(default=None, alias="TEMPORAL_API_KEY")
    task_queue: str = Field(default=DEFAULT_TASK_QUEUE, alias="BILLING_TASK_QUEUE")
    data_dir: Path = Field(default=Path("data"), alias="BILLING_DATA_DIR")
    database_url_override: SecretStr | None = Field(default=None, alias="BILLING_DATABASE_URL")
    ui_port: int = Field(default=8233, alias="BILLING_UI_PORT")
    webhook_sink_port: int = Field(default=8765, alias="BILLING_WEBHOOK_SINK_PORT")
    metrics_port: int | None = Field(default=None, alias="BILLING_METRICS_PORT")
    log_level: str = Field(default="INFO", alias="BILLING_LOG_LEVEL")
    # Periods kept in a worker's sticky cache (about 105 KiB each, bench/README.md); the
    # others are replayed from history when they wake, so size it to the busy ones.
    max_cached_workflows: int = Field(default=1000, ge=0, alias="BILLING_MAX_CACHED_WORKFLOWS")
    # Workflow code in the SDK's sandbox (on) or not (off, the default: ~40 KiB less per
    # cached period; determinism guarded by the architecture and replay tests).
    workflow_sandbox: bool = Field(default=False, alias="BILLING_WORKFLOW_SANDBOX")
    # Workflow tasks a worker process takes at once (WORKFLOW_TASK_SLOTS); each may run one
    # local activity, on one of the worker's 16 activity threads.
    workflow_task_slots: int = Field(
        default=WORKFLOW_TASK_SLOTS, ge=2, le=8, alias="BILLING_WORKFLOW_TASK_SLOTS"
    )
    # Payload encryption (config/codec.py): "KEY_ID:BASE64_KEY,..." newest first, or a file
    # in the same format. Unset: payloads are stored in clear.
    payload_keys: SecretStr | None = Field(default=None, alias="BILLING_PAYLOAD_KEYS")
    payload_keys_file: Path | None = Field(default=None, alias="BILLING_PAYLOAD_KEYS_FILE")
    # `billing codec-server`: the bearer token callers present, and the Temporal UI
    # origins (comma-separated) whose browsers may call it.
    codec_server_token: SecretStr | None = Field(default=None, alias="BILLING_CODEC_SERVER_TOKEN")
    codec_server_port: int = Field(default=8081, alias="BILLING_CODEC_SERVER_PORT")
    codec_server_origins: str = Field(
        default="http://localhost:8233,http://127.0.0.1:8233",
        alias="BILLING_CODEC_SERVER_ORIGINS",
    )

    @field_validator("payload_keys", "payload_keys_file", "codec_server_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose passes `${VAR:-}` as an empty string when the operator sets nothing.
        return None if isinstance(value, str) and not value.strip() else value

    @cached_property
    def database_url(self) -> str:
        """``BILLING_DATABASE_URL``, else a SQLite file in the data folder."""
        if self.database_url_override is not None:
            return self.database_url_override.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'billing.db').resolve()}"

    @property
    def temporal_host(self) -> str:
        return self.temporal_address.rsplit(":", 1)[0]

    @property
    def temporal_port(self) -> int:
        return int(self.temporal_address.rsplit(":", 1)[1])
