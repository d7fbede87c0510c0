"""Shared plumbing of the Temporal benchmarks: a dev server, a fresh schema, a catalog.

Everything listens on 127.0.0.1 and is torn down on exit: the dev server process is
stopped by its pid, the PostgreSQL schema is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import sqlalchemy
from sqlalchemy import text
from temporalio.client import Client

from config.binaries import temporal_cli
from config.codec import data_converter
from config.settings import Settings
from config.temporal import dev_server_search_attribute_flags
from services.catalog import load_catalog
from store.db import make_engine, upgrade

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
RESULTS = Path(__file__).parent / "results"
SECRET = "whsec_bench"
SERVER_START_TIMEOUT = 60.0
WORKER_STOP_TIMEOUT = 30.0


# --------------------------------------------------------------------------- command line


def bench_parser(doc: str | None, smoke_help: str) -> argparse.ArgumentParser:
    """The options every benchmark has: ``--smoke``, ``--url`` and ``--output``."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help=f"{smoke_help}, for the tests")
    parser.add_argument("--url", default=os.environ.get("BILLING_TEST_POSTGRES_URL", DEFAULT_URL))
    parser.add_argument("--output", type=Path, default=None)
    return parser


def finish(
    name: str, result: dict[str, Any], output: Path | None, summary: str, *, exit_code: int = 0
) -> NoReturn:
    """Write the result, print the one-line summary, exit without the SDK's exit crash."""
    path = write_result(name, result, output)
    print(f"{name}: {summary} -> {path}")
    sys.stdout.flush()
    os._exit(exit_code)  # sdk-python issue 300: avoid the interpreter-exit crash after SDK use


def stop_cleanly_on_sigterm() -> None:
    """SIGTERM behaves like Ctrl-C: context managers stop the server and drop the schema."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_at_start": load_average(),
        # BILLING_PAYLOAD_KEYS set: every client and worker of the bench encrypts payloads.
        "payload_encryption": data_converter(Settings()).payload_codec is not None,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


SERVER_PIDS: list[int] = []  # the running dev servers, for cpu_seconds()


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time a process (this one by default) has used, in seconds."""
    return _stat_cpu_seconds(Path(f"/proc/{pid or 'self'}/stat").read_text())


def postgres_cpu_seconds() -> float:
    """CPU time of every PostgreSQL process on this machine (server and backends)."""
    return sum(postgres_cpu_by_pid().values())


def postgres_cpu_by_pid() -> dict[tuple[int, int], float]:
    """CPU time of each PostgreSQL process on this machine, by (pid, start time)."""
    found: dict[tuple[int, int], float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            text = stat.read_text()
            if "(postgres)" in text or "(postmaster)" in text:
                started = int(text.rsplit(")", 1)[1].split()[19])  # field 22: starttime
                found[(int(stat.parent.name), started)] = _stat_cpu_seconds(text)
    return found


def _stat_cpu_seconds(stat: str) -> float:
    """utime + stime of a /proc/<pid>/stat line (fields 14 and 15), in seconds."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by the bench process, the dev server and PostgreSQL over a phase.

    Worker processes are counted from ``worker_pids``, or from ``worker_cpu`` when they
    come and go (:meth:`WorkerPool.cpu_seconds` keeps the CPU of the killed ones).
    """

    def __init__(
        self,
        worker_pids: list[int] | None = None,
        worker_cpu: Callable[[], float] | None = None,
    ) -> None:
        pids = worker_pids or []
        self._worker_cpu = worker_cpu or (
            (lambda: sum(cpu_seconds(pid) for pid in pids)) if pids else None
        )
        self._start = self._read()
        self._postgres_start = postgres_cpu_by_pid()

    def _read(self) -> dict[str, float]:
        readings = {
            "bench_process": cpu_seconds(),
            "dev_server": sum(cpu_seconds(pid) for pid in SERVER_PIDS),
        }
        if self._worker_cpu is not None:
            readings["worker_processes"] = self._worker_cpu()
        return readings

    def used(self) -> dict[str, float]:
        now = self._read()
        used = {name: round(now[name] - self._start[name], 1) for name in now}
        # Per backend: one that exits during the phase takes its CPU with it, and a
        # machine-wide total would then fall (other jobs' backends come and go too). The
        # backends alive at the end count from the start (or from 0 when new); those
        # that ended in between are left out, so this is a lower bound.
        before = self._postgres_start
        used["postgres"] = round(
            sum(cpu - before.get(key, 0.0) for key, cpu in postgres_cpu_by_pid().items()), 1
        )
        return used


class Finish:
    """Records when each period ended; wakes the waiter when all of them did."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.ended: dict[str, float] = {}
        self.all_done = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def mark(self, key: str, at: float) -> None:
        if key not in self.ended:
            self.ended[key] = at
            if len(self.ended) >= self.expected:
                self._loop.call_soon_threadsafe(self.all_done.set)

    def mark_threadsafe(self, key: str, at: float) -> None:
        self._loop.call_soon_threadsafe(self.mark, key, at)


def summarise(
    name: str,
    started: dict[str, float],
    finish: Finish,
    began: float,
    launched: float,
    cpu: CpuMeter,
) -> dict[str, Any]:
    ended = max(finish.ended.values()) if finish.ended else time.monotonic()
    latencies = [finish.ended[k] - started[k] for k in finish.ended if k in started]
    seconds = ended - began
    result = {
        "periods": finish.expected,
        "completed": len(finish.ended),
        "seconds": round(seconds, 2),
        "launch_seconds": round(launched - began, 2),
        "invoices_per_second": round(len(finish.ended) / seconds, 1) if seconds else None,
        "latency_p50_seconds": round(percentile(latencies, 0.5), 3),
        "latency_p99_seconds": round(percentile(latencies, 0.99), 3),
        "load_average_after": load_average(),
        "cpu_seconds": cpu.used(),
    }
    print(
        f"  {name}: {result['completed']:,}/{finish.expected:,} periods in "
        f"{result['seconds']}s (launch {result['launch_seconds']}s) = "
        f"{result['invoices_per_second']}/s; latency p50 {result['latency_p50_seconds']}s, "
        f"p99 {result['latency_p99_seconds']}s; load {result['load_average_after']}; "
        f"CPU s {result['cpu_seconds']}",
        flush=True,
    )
    return result


async def wait_all(finish: Finish, timeout: float, progress: Callable[[], str]) -> None:
    """Wait until every period is done (or ``timeout``), printing ``progress()`` every 15 s."""
    await wait_until(finish.all_done, timeout, progress)


async def wait_until(done: asyncio.Event, timeout: float, progress: Callable[[], str]) -> None:
    """Wait for ``done`` at most ``timeout`` seconds, printing ``progress()`` every 15 s."""
    deadline = time.monotonic() + timeout
    while not done.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            print(f"  timeout after {timeout:.0f}s: {progress()}", flush=True)
            return
        try:
            await asyncio.wait_for(done.wait(), timeout=min(15.0, remaining))
        except TimeoutError:
            print(f"  ... {progress()}", flush=True)


def rss_kib(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), in KiB."""
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def write_result(name: str, result: dict[str, Any], output: Path | None = None) -> Path:
    path = output or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


# --------------------------------------------------------------------------- database


@contextlib.contextmanager
def fresh_schema(server_url: str, prefix: str) -> Iterator[str]:
    """A migrated schema of its own (search_path in the URL), dropped afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(server_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in server_url else "?"
    url = f"{server_url}{separator}options={quote(f'-csearch_path={schema}')}"
    try:
        upgrade(url)
        yield url
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def bench_catalog(subscriptions: list[str], webhook_url: str) -> dict[str, Any]:
    """One billing entity, one customer per 100 subscriptions, usage charges, a webhook."""
    charges = [
        {
            "billable_metric_code": "api_calls",
            "charge_model": "standard",
            "properties": {"amount": "0.01"},
        },
        {
            "billable_metric_code": "storage_gb",
            "charge_model": "graduated",
            "properties": {
                "graduated_ranges": [
                    {"from_value": 0, "to_value": 10, "per_unit_amount": "2", "flat_amount": "0"},
                    {"from_value": 10, "to_value": None, "per_unit_amount": "1"},
                ]
            },
        },
    ]
    customers = sorted({f"cust_{i // 100}" for i in range(len(subscriptions))})
    return {
        "billing_entities": [
            {
                "code": "bench",
                "name": "Bench",
                "currency": "USD",
                "timezone": "UTC",
                "grace_period_days": 1,
                "invoice_prefix": "BENCH",
            }
        ],
        "customers": [{"external_id": c, "billing_entity_code": "bench"} for c in customers],
        "billable_metrics": [
            {"code": "api_calls", "aggregation_type": "count"},
            {"code": "storage_gb", "aggregation_type": "sum", "field_name": "gb"},
        ],
        "plans": [{"code": "pro", "name": "Pro", "amount_cents": 1000, "charges": charges}],
        "subscriptions": [
            {
                "external_id": sub,
                "customer_external_id": f"cust_{i // 100}",
                "plan_code": "pro",
                "started_at": "2025-01-01T00:00:00Z",
            }
            for i, sub in enumerate(subscriptions)
        ],
        "webhook_endpoints": [{"code": "sink", "url": webhook_url, "secret": SECRET}],
    }


def load_bench_catalog(url: str, subscriptions: list[str], webhook_url: str) -> sqlalchemy.Engine:
    engine = make_engine(url, pool_size=20, max_overflow=10)
    load_catalog(engine, bench_catalog(subscriptions, webhook_url))
    return engine


# --------------------------------------------------------------------------- temporal


@contextlib.asynccontextmanager
async def dev_server() -> AsyncIterator[Client]:
    """``temporal server start-dev`` (in-memory, headless) on free ports, stopped on exit."""
    port = free_port()
    command = [
        str(temporal_cli()),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--http-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
        "--headless",
        "--log-level",
        "error",
        *dev_server_search_attribute_flags(),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    SERVER_PIDS.append(process.pid)
    try:
        client = await _connect(f"127.0.0.1:{port}", process)
        yield client
    finally:
        SERVER_PIDS.remove(process.pid)
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stderr is not None:
            process.stderr.close()


async def _connect(address: str, process: subprocess.Popen[bytes]) -> Client:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        if process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"dev server exited ({process.returncode}): {stderr[-2000:]}")
        try:
            # The product's converter: encrypted when BILLING_PAYLOAD_KEYS is set.
            return await Client.connect(address, data_converter=data_converter(Settings()))
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


class WorkerPool:
    """``bench/_worker.py`` processes (``worker.build_worker``), one per slot, as
    ``billing worker --processes N`` runs them; a slot's process can be SIGKILLed and
    started again (the close's fault mode)."""

    def __init__(
        self, client: Client, url: str, task_queue: str, options: Sequence[Sequence[str]]
    ) -> None:
        self._command = [
            sys.executable,
            str(Path(__file__).with_name("_worker.py")),
            client.service_client.config.target_host,
            url,
            task_queue,
        ]
        self._options = [list(extra) for extra in options]
        self.processes: list[asyncio.subprocess.Process | None] = [None] * len(options)
        self.ready: list[dict[str, Any]] = [{} for _ in options]
        self._cpu_of_killed = 0.0

    async def start(self, slot: int) -> dict[str, Any]:
        """Start the slot's process; returns what it printed once polling (``pid``...)."""
        process = await asyncio.create_subprocess_exec(
            *self._command, *self._options[slot], stdout=asyncio.subprocess.PIPE
        )
        self.processes[slot] = process
        assert process.stdout is not None
        line = await process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker process {slot} exited ({await process.wait()})")
        self.ready[slot] = json.loads(line)
        return self.ready[slot]

    async def kill(self, slot: int) -> None:
        """SIGKILL the slot's process (no shutdown: in-flight tasks are simply lost)."""
        process = self.processes[slot]
        assert process is not None and process.returncode is None, f"slot {slot} not running"
        with contextlib.suppress(OSError):
            self._cpu_of_killed += cpu_seconds(process.pid)
        process.send_signal(signal.SIGKILL)
        await process.wait()
        self.processes[slot] = None

    def cpu_seconds(self) -> float:
        """CPU of every process the pool started, the killed ones up to their kill."""
        alive = 0.0
        for process in self.processes:
            if process is not None and process.returncode is None:
                with contextlib.suppress(OSError):
                    alive += cpu_seconds(process.pid)
        return self._cpu_of_killed + alive

    async def stop(self) -> None:
        """SIGTERM (a clean worker shutdown), SIGKILL after ``WORKER_STOP_TIMEOUT``."""
        running = [p for p in self.processes if p is not None and p.returncode is None]
        for process in running:
            process.terminate()
        for process in running:
            try:
                await asyncio.wait_for(process.wait(), WORKER_STOP_TIMEOUT)
            except TimeoutError:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def worker_pool(
    client: Client, url: str, task_queue: str, options: Sequence[Sequence[str]]
) -> AsyncIterator[WorkerPool]:
    """A :class:`WorkerPool` with every slot started; stopped on exit."""
    pool = WorkerPool(client, url, task_queue, options)
    try:
        await asyncio.gather(*(pool.start(slot) for slot in range(len(options))))
        yield pool
    finally:
        await pool.stop()


@contextlib.asynccontextmanager
async def spawn_workers(
    client: Client, url: str, task_queue: str, options: Sequence[Sequence[str]]
) -> AsyncIterator[list[dict[str, Any]]]:
    """One ``bench/_worker.py`` process (``worker.build_worker``) per entry of ``options``
    (its extra command-line options), as ``billing worker --processes N`` runs them.

    Yields what each printed when it started polling (``pid``, cache size...); stops them
    with SIGTERM on exit.
    """
    async with worker_pool(client, url, task_queue, options) as pool:
        yield pool.ready


async def bounded_gather(coros: list[Any], limit: int) -> list[Any]:
    """Run coroutines with at most ``limit`` in flight; results in order."""
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))
