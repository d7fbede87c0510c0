"""``billing dev``: the embedded stack in one process tree.

Starts (or reuses) a Temporal dev server with its UI and a persistent SQLite file in the
data folder, registers the search attributes, applies the database migrations, runs a
local webhook sink and a worker. Ctrl-C stops everything it started and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable

from config.binaries import temporal_cli
from config.settings import Settings

__all__ = ["DEMO_WEBHOOK_SECRET", "DevStackError", "run_dev", "webhook_secret"]

DEMO_WEBHOOK_SECRET = "whsec_demo_only"
SERVER_START_TIMEOUT = 60.0


class DevStackError(RuntimeError):
    """The embedded stack cannot start (a port taken, a binary missing)."""


def webhook_secret() -> str:
    return os.environ.get("BILLING_WEBHOOK_SECRET", DEMO_WEBHOOK_SECRET)


def _port_answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _require_free(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise DevStackError(
                f"port {port} ({what}) is already taken on {host}: stop whatever uses it "
                f"(`lsof -i :{port}`) or choose another port"
            ) from err


def _dev_server_command(settings: Settings) -> list[str]:
    from config.temporal import dev_server_search_attribute_flags

    return [
        str(temporal_cli()),
        "server",
        "start-dev",
        "--ip",
        settings.temporal_host,
        "--port",
        str(settings.temporal_port),
        "--ui-port",
        str(settings.ui_port),
        "--db-filename",
        str((settings.data_dir / "temporal.db").resolve()),
        "--namespace",
        settings.temporal_namespace,
        "--log-level",
        "warn",
        *dev_server_search_attribute_flags(),
    ]


async def _wait_for_server(settings: Settings, process: subprocess.Popen[bytes]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SERVER_START_TIMEOUT
    while loop.time() < deadline:
        if process.poll() is not None:
            raise DevStackError(
                f"the Temporal dev server exited with code {process.returncode}; "
                f"see {settings.data_dir / 'temporal.log'}"
            )
        if _port_answers(settings.temporal_host, settings.temporal_port):
            return
        await asyncio.sleep(0.2)
    raise DevStackError(f"the Temporal dev server did not answer within {SERVER_START_TIMEOUT}s")


def say(message: str) -> None:
    print(message, flush=True)


async def run_dev(
    settings: Settings,
    *,
    after_start: Callable[[Settings], Awaitable[None]] | None = None,
    stop_after: bool = False,
) -> int:
    """Run the embedded stack until Ctrl-C (or, with ``stop_after``, until ``after_start`` ends)."""
    from config.temporal import connect, register_search_attributes
    from starter.webhook_sink import WebhookSink, format_delivery
    from store.db import upgrade
    from worker import run_worker

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    server: subprocess.Popen[bytes] | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    if _port_answers(settings.temporal_host, settings.temporal_port):
        say(f"Temporal: using the server already answering at {settings.temporal_address}")
    else:
        _require_free(settings.temporal_host, settings.temporal_port, "Temporal frontend")
        _require_free(settings.temporal_host, settings.ui_port, "Temporal UI")
        log_file = (settings.data_dir / "temporal.log").open("ab")
        server = subprocess.Popen(
            _dev_server_command(settings),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop it ourselves, in order
        )
        await _wait_for_server(settings, server)
        say(
            f"Temporal: dev server at {settings.temporal_address}, "
            f"UI at http://{settings.temporal_host}:{settings.ui_port} "
            f"(history kept in {settings.data_dir / 'temporal.db'})"
        )
    sink: WebhookSink | None = None
    worker_task: asyncio.Task[None] | None = None
    try:
        client = await connect(settings)
        added = await register_search_attributes(client)
        if added:
            say(f"Temporal: registered search attributes {', '.join(added)}")
        await asyncio.to_thread(upgrade, settings.database_url)
        say(f"Database: migrated ({_describe_url(settings.database_url)})")
        sink = WebhookSink(
            secret=webhook_secret(),
            record_path=settings.data_dir / "webhooks.jsonl",
            on_delivery=lambda record: say(format_delivery(record)),
        )
        await sink.start("127.0.0.1", settings.webhook_sink_port)
        say(f"Webhooks: sink at {sink.url} (recorded in {settings.data_dir / 'webhooks.jsonl'})")
        worker_task = asyncio.create_task(run_worker(settings, stop=stop))
        say(f"Worker: polling task queue {settings.task_queue!r}. Ctrl-C stops everything.")
        if after_start is not None:
            await after_start(settings)
            if stop_after:
                stop.set()
        await stop.wait()
        say("Stopping...")
    finally:
        stop.set()
        if worker_task is not None:
            with contextlib.suppress(Exception):
                await worker_task
        if sink is not None:
            await sink.stop()
        if server is not None:
            server.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(server.wait, 20)
            except subprocess.TimeoutExpired:
                server.kill()
        say("Stopped.")
    return 0


def _describe_url(url: str) -> str:
    """The database URL without its password (never print secrets)."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main() -> int:
    try:
        return asyncio.run(run_dev(Settings()))
    except DevStackError as err:
        print(f"billing dev: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
