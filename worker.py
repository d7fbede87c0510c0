"""The worker: the composition root that builds dependencies and registers everything.

Run it with ``billing worker`` (or ``python worker.py``); ``--processes N`` runs N worker
processes on the same task queue. SIGINT/SIGTERM stop polling, let running activities
finish (up to a grace timeout), then exit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import importlib.abc
import importlib.machinery
import logging
import multiprocessing
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from importlib.machinery import ModuleSpec
from types import CodeType, ModuleType
from typing import Any, ClassVar

import httpx
from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.invoices import InvoiceActivities
from activities.launcher import LauncherActivities
from activities.webhooks import WebhookActivities
from config.codec import EncryptionCodec
from config.lean_runner import LeanUnsandboxedWorkflowRunner
from config.logging_setup import configure_logging
from config.settings import WORKFLOW_TASK_SLOTS, Settings
from config.temporal import connect
from store.db import make_engine
from workflows.billing_period import BillingPeriodWorkflow
from workflows.launch_periods import LaunchPeriodsWorkflow
from workflows.webhook_delivery import WebhookDeliveryWorkflow

__all__ = [
    "WORKFLOWS",
    "activity_slots",
    "build_worker",
    "expose_metrics",
    "main",
    "run_worker",
    "run_workers",
    "share_workflow_code",
    "tune_garbage_collection",
    "with_shared_payload_converter",
    "workflow_runner",
]

log = logging.getLogger("billing.worker")

WORKFLOWS: Sequence[type] = (BillingPeriodWorkflow, WebhookDeliveryWorkflow, LaunchPeriodsWorkflow)
# Store activities are synchronous SQLAlchemy calls: one thread (and one connection) each.
ACTIVITY_THREADS = 16
SHUTDOWN_GRACE = timedelta(seconds=20)


# The workflows' helper modules: deterministic, stateless between calls, so a sandboxed
# worker loads them once per process. They are named one by one: a package name would also
# pass through the workflow modules themselves, which the sandbox must load per run. The
# `from workflows import x` form inside a workflow module bypasses the sandbox's check, so
# ``imports_passed_through`` alone re-executes them for every period.
SANDBOX_PASSTHROUGH = (
    "activities",
    "billing",
    "workflows.commands",
    "workflows.handover",
    "workflows.inbox",
    "workflows.messages",
    "workflows.period_state",
    "workflows.phases",
    "workflows.presentation",
    "workflows.search_attributes",
    "workflows.store_steps",
)


def workflow_runner(sandboxed: bool) -> WorkflowRunner:
    """How the worker (and the replay tests) run workflow code: ``BILLING_WORKFLOW_SANDBOX``.

    Unsandboxed (the default) every period runs the same imported classes: no module
    executed again per run, ~110 instead of ~150 KiB per cached period (bench/README.md).
    Determinism is then guarded by tests/test_architecture.py (no clock, randomness or I/O
    module in workflows/ and billing/) and the replay tests, not at run time. The runner
    is the SDK's, except that cached runs keep no activation's protobuf arena alive
    (``config.lean_runner``, ~16 KiB less per cached period).
    """
    if not sandboxed:
        return LeanUnsandboxedWorkflowRunner()
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*SANDBOX_PASSTHROUGH)
    )


_shared_payload_converter = PydanticPayloadConverter()


def _the_shared_payload_converter() -> PydanticPayloadConverter:
    return _shared_payload_converter


def with_shared_payload_converter(client: Client) -> Client:
    """The same client, with one pydantic payload converter for every workflow run.

    The SDK builds a payload converter per run from the data converter's class, and each
    builds its own type adapters; the shared one caches them once per process. It holds no
    per-run state (it is what activities and the client already share).
    """
    config = client.config()
    converter = config["data_converter"]
    make = converter.payload_converter_class
    if not (isinstance(make, type) and issubclass(make, PydanticPayloadConverter)):
        return client  # another converter, or already shared
    # The SDK only calls it; a function returning the one instance serves as the "class".
    shared: Any = _the_shared_payload_converter
    config["data_converter"] = dataclasses.replace(converter, payload_converter_class=shared)
    return Client(**config)


_share_lock = threading.Lock()


class _SharedCodeLoader(importlib.machinery.SourceFileLoader):
    """A source loader that compiles each file once per process, whoever imports it."""

    _codes: ClassVar[dict[str, CodeType]] = {}

    def get_code(self, fullname: str) -> CodeType:
        code = self._codes.get(self.path)
        if code is None:
            code = super().get_code(fullname)
            assert code is not None
            self._codes[self.path] = code  # a race only compiles twice
        return code


class _SharedCodeFinder(importlib.abc.MetaPathFinder):
    """Finds the workflows' packages as usual, with a loader that shares their code."""

    def __init__(self, packages: set[str]) -> None:
        self.packages = packages

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname.partition(".")[0] not in self.packages:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or type(spec.loader) is not importlib.machinery.SourceFileLoader:
            return spec
        spec.loader = _SharedCodeLoader(spec.loader.name, spec.loader.path)
        return spec


def share_workflow_code(workflow_classes: Sequence[type] = WORKFLOWS) -> None:
    """Compile the workflows' packages once per process and share that code between runs.

    The sandbox imports a workflow's module (and its package) again for every period it
    loads, so that each run has its own module globals under the sandbox's restrictions.
    Python's loader turns the file into new code objects on every such import: about
    70 KiB per cached period for ``workflows.billing_period``, and the CPU to unmarshal it,
    or to compile it where PYTHONDONTWRITEBYTECODE leaves no .pyc (bench/README.md). Code
    objects are immutable, so every run can execute the same ones in its own globals.
    """
    packages = {workflow_class.__module__.partition(".")[0] for workflow_class in workflow_classes}
    with _share_lock:
        installed = next((f for f in sys.meta_path if isinstance(f, _SharedCodeFinder)), None)
        if installed is None:
            sys.meta_path.insert(0, _SharedCodeFinder(packages))
        else:
            installed.packages |= packages


def expose_metrics(bind_address: str) -> None:
    """Serve the SDK's Prometheus metrics of every worker in this process at ``bind_address``."""
    Runtime.set_default(
        Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind_address))),
        error_if_already_set=False,
    )


def tune_garbage_collection() -> None:
    """Keep the objects loaded at start-up out of every later full collection.

    Modules, pydantic schemas and SQLAlchemy metadata never become garbage; frozen, they
    are no longer walked by each full collection. The collection thresholds stay CPython's:
    raising them saved CPU but kept evicted periods' garbage for longer, ~85 to ~130 KiB of
    RSS more per evicted period (bench/README.md).
    """
    gc.collect()
    gc.freeze()


def activity_slots(executor: ThreadPoolExecutor, workflow_task_slots: int) -> tuple[int, int]:
    """``(regular, local)``: how many regular and local activities a worker whose
    activities run on ``executor`` takes at once.

    A workflow task waits for its local activity (one at a time per period), so there are
    as many local activities as workflow-task slots, each sure of a thread; the other
    threads serve regular activities, at least one. Raises ``ValueError`` for an executor
    too small for that (the SDK would queue activities behind busy threads, past their
    timeouts, and only warn).
    """
    threads = executor._max_workers  # no public accessor; the SDK reads it too
    if threads < workflow_task_slots + 1:
        raise ValueError(
            f"the activity executor has {threads} thread(s); a worker with "
            f"{workflow_task_slots} workflow-task slots needs at least "
            f"{workflow_task_slots + 1}: one per local activity "
            f"({workflow_task_slots}) and at least one for regular activities"
        )
    return threads - workflow_task_slots, workflow_task_slots


def build_worker(
    client: Client,
    engine: Engine,
    http: httpx.AsyncClient,
    *,
    task_queue: str,
    executor: ThreadPoolExecutor,
    max_cached_workflows: int = 1000,
    workflow_sandbox: bool = False,
    workflow_task_slots: int = WORKFLOW_TASK_SLOTS,
) -> Worker:
    """A worker with every workflow and activity of the product registered.

    ``executor``: runs every activity, local or regular; its size (``ACTIVITY_THREADS``
    in production) splits into ``workflow_task_slots`` threads for local activities and
    the rest for regular ones (:func:`activity_slots`).
    ``workflow_sandbox``: run workflow code in the SDK's sandbox (``workflow_runner``).
    """
    regular, local = activity_slots(executor, workflow_task_slots)
    if workflow_sandbox:
        share_workflow_code()
    invoices = InvoiceActivities(engine)
    webhooks = WebhookActivities(engine, http)
    activities: list[Any] = [
        invoices.load_period_settings,
        invoices.record_usage,
        invoices.record_usage_batches,
        invoices.create_draft,
        invoices.queue_drafted_webhook,
        invoices.draft_invoice,
        invoices.refresh_draft,
        invoices.adjust_fee,
        invoices.remove_fee_adjustment,
        invoices.finalize_invoice,
        invoices.recompute_grace_period,
        invoices.record_rejection,
        webhooks.deliver_webhook,
        LauncherActivities(engine).list_periods_ending,
    ]
    return Worker(
        with_shared_payload_converter(client),
        task_queue=task_queue,
        workflow_runner=workflow_runner(workflow_sandbox),
        workflows=list(WORKFLOWS),
        activities=activities,
        activity_executor=executor,
        max_concurrent_activities=regular,
        max_concurrent_local_activities=local,
        graceful_shutdown_timeout=SHUTDOWN_GRACE,
        max_cached_workflows=max_cached_workflows,
        max_concurrent_workflow_tasks=workflow_task_slots,
    )


async def run_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Connect, poll until ``stop`` is set (or SIGINT/SIGTERM), then shut down cleanly."""
    if settings.metrics_port:
        expose_metrics(f"0.0.0.0:{settings.metrics_port}")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    client = await connect(settings)
    # One connection per activity thread: no store activity waits for a connection.
    engine = make_engine(settings.database_url, pool_size=ACTIVITY_THREADS)
    tune_garbage_collection()
    with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS) as executor:
        async with httpx.AsyncClient() as http:
            worker = build_worker(
                client,
                engine,
                http,
                task_queue=settings.task_queue,
                executor=executor,
                max_cached_workflows=settings.max_cached_workflows,
                workflow_sandbox=settings.workflow_sandbox,
                workflow_task_slots=settings.workflow_task_slots,
            )
            codec = client.data_converter.payload_codec
            log.info(
                "worker polling task queue %r at %s (namespace %s); payloads %s",
                settings.task_queue,
                settings.temporal_address,
                settings.temporal_namespace,
                # Key ids only: they name keys, they are not secret.
                f"encrypted with key {codec.key_ids[0]!r} ({len(codec.key_ids)} keys to read)"
                if isinstance(codec, EncryptionCodec)
                else "in clear (BILLING_PAYLOAD_KEYS unset)",
            )
            async with worker:
                await stop.wait()
                log.info("worker stopping: finishing running tasks")
    engine.dispose()
    log.info("worker stopped")


def _process_main(index: int) -> None:
    configure_logging(Settings().log_level, process=f"worker[{index}]")
    asyncio.run(run_worker(Settings()))


def run_workers(processes: int) -> int:
    """Run ``processes`` worker processes; returns when all of them have stopped."""
    if processes <= 1:
        _process_main(0)
        return 0
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_process_main, args=(i,)) for i in range(processes)]
    for child in children:
        child.start()

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.is_alive() and child.pid is not None:
                import os

                os.kill(child.pid, signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    for child in children:
        child.join()
    return max((child.exitcode or 0) for child in children)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run billing workers.")
    parser.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    args = parser.parse_args(argv)
    return run_workers(args.processes)


if __name__ == "__main__":
    sys.exit(main())
