"""The worker polls and stops cleanly; `billing dev` starts the stack and Ctrl-C stops it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from worker import run_worker

BILLING = str(Path(sys.executable).parent / "billing")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_worker_polls_its_task_queue_and_stops_on_request(
    dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str
) -> None:
    target = dev_env.client.service_client.config.target_host
    settings = Settings(
        TEMPORAL_ADDRESS=target,
        BILLING_TASK_QUEUE=task_queue,
        BILLING_DATABASE_URL=f"sqlite:///{tmp_path / 'billing.db'}",
    )
    from store.db import upgrade

    upgrade(settings.database_url)
    stop = asyncio.Event()
    running = asyncio.create_task(run_worker(settings, stop=stop))
    try:
        for _ in range(100):
            described = await dev_env.client.workflow_service.describe_task_queue(
                _describe_request(dev_env.client, task_queue)
            )
            if described.pollers:
                break
            await asyncio.sleep(0.1)
        assert described.pollers, "the worker never polled its task queue"
    finally:
        stop.set()
    await asyncio.wait_for(running, timeout=30)


def _describe_request(client: Client, task_queue: str) -> object:
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    return DescribeTaskQueueRequest(
        namespace=client.namespace, task_queue=TaskQueue(name=task_queue)
    )


@pytest.mark.e2e
def test_billing_dev_starts_the_stack_and_ctrl_c_stops_all_of_it(tmp_path: Path) -> None:
    temporal_port, ui_port, sink_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "BILLING_UI_PORT": str(ui_port),
        "BILLING_WEBHOOK_SINK_PORT": str(sink_port),
        "BILLING_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("BILLING_DATABASE_URL", None)
    process = subprocess.Popen(
        [BILLING, "dev"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Worker: polling"):
                break
        output = "".join(lines)
        assert "Worker: polling" in output, output
        assert f"UI at http://127.0.0.1:{ui_port}" in output
        assert (tmp_path / "data" / "temporal.db").exists()
        assert (tmp_path / "data" / "billing.db").exists()
        # The search attributes were registered: a client can list with them.
        asyncio.run(_list_with_search_attributes(f"127.0.0.1:{temporal_port}"))

        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, "".join(lines) + rest
    assert "Stopped." in rest
    for port in (temporal_port, ui_port, sink_port):  # everything it started is gone
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"


async def _list_with_search_attributes(address: str) -> None:
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    found = [w async for w in client.list_workflows('BillingInvoiceStatus = "draft"')]
    assert found == []


@pytest.mark.e2e
def test_billing_dev_explains_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ui_port = taken.getsockname()[1]
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
            "BILLING_UI_PORT": str(ui_port),
            "BILLING_DATA_DIR": str(tmp_path / "data"),
        }
        result = subprocess.run(
            [BILLING, "dev"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
    assert result.returncode == 2
    assert f"port {ui_port} (Temporal UI) is already taken" in result.stderr
