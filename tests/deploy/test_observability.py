"""Observability in production: the SDK's Prometheus endpoint and structured logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from temporalio import activity
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from config.logging_setup import JsonFormatter, configure_logging
from store.db import upgrade

ROOT = Path(__file__).resolve().parents[2]
BILLING = Path(sys.executable).with_name("billing")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.integration
@pytest.mark.e2e
async def test_worker_exposes_sdk_prometheus_metrics(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'billing.db'}"
    upgrade(database_url)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "BILLING_"))}
    env |= {
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "BILLING_TASK_QUEUE": f"metrics-{uuid.uuid4()}",
        "BILLING_DATABASE_URL": database_url,
        "BILLING_METRICS_PORT": str(port),
    }
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [str(BILLING), "worker"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    body = ""
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(150):
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()
                try:
                    response = await http.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                    body = response.text
                    if response.status_code == 200 and "temporal_num_pollers" in body:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    metric_names = {
        line.split("{")[0].split()[0]
        for line in body.splitlines()
        if line and not line.startswith("#")
    }
    assert "temporal_num_pollers" in metric_names, body[:2000]
    assert any(name.startswith("temporal_request") for name in metric_names), metric_names
    assert worker.returncode == 0, "SIGTERM must stop the worker cleanly"


def capture(
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> tuple[list[str], logging.Handler]:
    lines: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = ListHandler()
    handler.setFormatter(JsonFormatter(process="worker[1]"))
    base = logger.logger if isinstance(logger, logging.LoggerAdapter) else logger
    base.addHandler(handler)
    base.setLevel(logging.INFO)
    return lines, handler


async def test_activity_logs_carry_the_workflow_id() -> None:
    lines, handler = capture(activity.logger)

    @activity.defn
    async def record_usage() -> None:
        activity.logger.info("recorded %d events", 3)

    environment = ActivityEnvironment()
    environment.info = environment.info.__class__(
        **{**environment.info.__dict__, "workflow_id": "billing-period/sub_1/2026-01-01"}
    )
    try:
        await environment.run(record_usage)
    finally:
        activity.logger.logger.removeHandler(handler)

    (line,) = [json.loads(line) for line in lines]
    assert line["workflow_id"] == "billing-period/sub_1/2026-01-01"
    assert line["activity_type"] == environment.info.activity_type
    assert line["run_id"] == environment.info.workflow_run_id
    assert line["level"] == "INFO" and line["process"] == "worker[1]"
    assert line["message"].startswith("recorded 3 events")


def test_workflow_context_and_exceptions_become_keys() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("temporalio.workflow", logging.ERROR, __file__, 1, "boom", (), None)
    record.temporal_workflow = {
        "workflow_id": "billing-period/sub_9/2026-01-01",
        "run_id": "r-1",
        "workflow_type": "BillingPeriodWorkflow",
        "task_queue": "billing-periods",
        "namespace": "default",
        "attempt": 1,
    }
    try:
        raise ValueError("bad fee")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = json.loads(formatter.format(record))
    assert line["workflow_id"] == "billing-period/sub_9/2026-01-01"
    assert line["run_id"] == "r-1" and line["workflow_type"] == "BillingPeriodWorkflow"
    assert "ValueError: bad fee" in line["exception"]
    plain = json.loads(formatter.format(logging.LogRecord("x", 20, __file__, 1, "hi", (), None)))
    assert set(plain) == {"ts", "level", "logger", "message"}


def test_configure_logging_replaces_root_handlers(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        configure_logging("warning", process="worker[0]")
        logging.getLogger("billing.worker").warning("queue %s", "billing-periods")
        logging.getLogger("billing.worker").info("hidden")
        lines = capsys.readouterr().err.strip().splitlines()
        assert [json.loads(line)["message"] for line in lines] == ["queue billing-periods"]
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
