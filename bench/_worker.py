"""A worker process for bench/memory.py: ``worker.build_worker`` on its own, so its RSS is
measured alone. Prints one JSON line with its settings when it polls; stops on SIGTERM.

    python bench/_worker.py ADDRESS DATABASE_URL TASK_QUEUE [--max-cached-workflows N] [--workflow-sandbox on|off]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
from temporalio.client import Client

from config.codec import data_converter
from config.settings import Settings
from store.db import make_engine
from worker import ACTIVITY_THREADS, build_worker, expose_metrics, tune_garbage_collection


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if args.metrics_port:
        expose_metrics(f"127.0.0.1:{args.metrics_port}")
    # As config.temporal.connect: encrypted payloads when BILLING_PAYLOAD_KEYS is set.
    client = await Client.connect(args.address, data_converter=data_converter(Settings()))
    engine = make_engine(args.database_url, pool_size=ACTIVITY_THREADS)  # as run_worker
    if not args.default_gc:
        tune_garbage_collection()  # as worker.run_worker does
    with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS) as executor:
        async with httpx.AsyncClient() as http:
            options = {}
            if args.max_cached_workflows is not None:
                options["max_cached_workflows"] = args.max_cached_workflows
            if args.workflow_sandbox is not None:
                options["workflow_sandbox"] = args.workflow_sandbox == "on"
            worker = build_worker(
                client, engine, http, task_queue=args.task_queue, executor=executor, **options
            )
            async with worker:
                print(
                    json.dumps(
                        {
                            "ready": True,
                            "pid": os.getpid(),
                            "max_cached_workflows": worker.config().get("max_cached_workflows"),
                            "workflow_runner": type(
                                worker.config().get("workflow_runner")
                            ).__name__,
                            "max_concurrent_workflow_tasks": worker.config().get(
                                "max_concurrent_workflow_tasks"
                            ),
                        }
                    ),
                    flush=True,
                )
                await stop.wait()
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("database_url")
    parser.add_argument("task_queue")
    parser.add_argument("--max-cached-workflows", type=int, default=None)
    parser.add_argument("--workflow-sandbox", choices=["on", "off"], default=None)
    parser.add_argument("--metrics-port", type=int, default=None)
    parser.add_argument("--default-gc", action="store_true", help="CPython's GC thresholds")
    asyncio.run(serve(parser.parse_args()))
    sys.stdout.flush()
    os._exit(0)  # sdk-python issue 300


if __name__ == "__main__":
    main()
