"""End-to-end set-up: the real ``billing`` CLI as subprocesses against a real dev server.

One stack per session: the ``dev_env`` dev server, a migrated SQLite file with the
example catalog (its webhook endpoint pointed at a local sink), and a worker on a fresh
task queue running in the test process (``running_stack`` of tests/fixtures/periods.py). Tests use distinct subscriptions or periods so
they never step on each other.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import sqlalchemy
import yaml
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from starter.webhook_sink import WebhookSink
from store.db import make_engine, upgrade
from tests.fixtures.periods import running_stack

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_e2e_tests"
CLI_TIMEOUT = 90.0

pytestmark = pytest.mark.e2e


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Stack:
    client: Client
    engine: sqlalchemy.Engine
    sink: WebhookSink
    env: dict[str, str]
    task_queue: str

    async def billing(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> Result:
        """Run ``python -m starter.cli ARGS`` as a subprocess (the worker keeps running);
        ``env`` adds to the stack's environment."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "starter.cli",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**self.env, **(env or {})},
            cwd=ROOT,
        )
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode() if stdin is not None else None), CLI_TIMEOUT
        )
        assert process.returncode is not None
        return Result(process.returncode, out.decode(), err.decode())

    async def ok(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> Result:
        result = await self.billing(*args, stdin=stdin, env=env)
        assert result.code == 0, f"billing {' '.join(args)} -> {result.code}\n{result.stderr}"
        # a clean exit: no traceback, no panic of the SDK's runtime at interpreter exit
        assert "Traceback" not in result.stderr and "panicked" not in result.stderr
        return result


def example_catalog(webhook_url: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "catalog.yaml").read_text())
    for endpoint in data["webhook_endpoints"]:
        endpoint["url"] = webhook_url
        endpoint.pop("secret_env", None)
        endpoint.pop("default_secret", None)
        endpoint["secret"] = SECRET
    return data


def cli_env(
    dev_env: WorkflowEnvironment, database_url: str, task_queue: str, **extra: str
) -> dict[str, str]:
    """The environment of a ``billing`` process of the test stack (none of ours inherited)."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BILLING_", "TEMPORAL_"))},
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "BILLING_DATABASE_URL": database_url,
        "BILLING_TASK_QUEUE": task_queue,
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "200",
        **extra,
    }


@pytest_asyncio.fixture(scope="session")
async def stack(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    database_url = f"sqlite:///{tmp_path_factory.mktemp('e2e') / 'billing.db'}"
    await asyncio.to_thread(upgrade, database_url)
    engine = make_engine(database_url)
    task_queue = f"e2e-{uuid.uuid4()}"
    env = cli_env(dev_env, database_url, task_queue)
    try:
        async with running_stack(
            dev_env.client,
            engine,
            example_catalog,
            task_queue=task_queue,
            secret=SECRET,
            threads=16,
        ) as sink:
            yield Stack(dev_env.client, engine, sink, env, task_queue)
    finally:
        engine.dispose()


def jsonl(events: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(event) + "\n" for event in events)
