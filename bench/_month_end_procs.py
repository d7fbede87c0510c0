"""The processes of bench/month_end.py: one ``billing`` command at a time with the CPU it
used, and ``billing worker --processes N`` until it polls.

Every process gets the checkout's ``billing`` executable and the bench's environment
(``TEMPORAL_ADDRESS``, ``BILLING_DATABASE_URL``...); its output goes to files in the run's
scratch folder, so that a chatty process never blocks on a full pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _stack import WORKER_STOP_TIMEOUT, _stat_cpu_seconds
from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

WORKER_START_TIMEOUT = 120.0  # a loaded machine takes a minute to start two workers


@dataclass(frozen=True)
class Completed:
    exit_code: int
    stdout: str
    stderr: str
    cpu_seconds: float  # user + system of the process and its threads (wait4)


async def cli(
    billing: Path, arguments: list[str], env: dict[str, str], scratch: Path, *, check: bool = True
) -> Completed:
    """Run ``billing ARGUMENTS`` to its end; ``check``: a non-zero exit code raises (the
    timed commands are not checked here: the bench reports what they refused)."""
    name = "-".join(a for a in arguments[:2] if not a.startswith("-"))
    out, err = scratch / f"{name}.out", scratch / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [str(billing), *arguments], stdout=stdout, stderr=stderr, env=env, cwd=scratch
        )
        try:
            # wait4, not Popen.wait: it also returns the CPU the process used.
            _, status, usage = await asyncio.to_thread(os.wait4, process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
    process.returncode = os.waitstatus_to_exitcode(status)
    completed = Completed(
        exit_code=process.returncode,
        stdout=out.read_text(),
        stderr=err.read_text(),
        cpu_seconds=usage.ru_utime + usage.ru_stime,
    )
    if check and completed.exit_code != 0:
        raise RuntimeError(
            f"billing {' '.join(arguments)} exited {completed.exit_code}: {completed.stderr[-2000:]}"
        )
    return completed


def _process_tree(root: int) -> dict[int, str]:
    """``/proc/<pid>/stat`` of a process and of every descendant still running."""
    stats: dict[int, str] = {}
    children: dict[int, list[int]] = {}
    for path in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            line = path.read_text()
            pid = int(path.parent.name)
            stats[pid] = line
            parent = int(line.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(pid)
    tree, pending = {}, [root]
    while pending:
        pid = pending.pop()
        if pid in stats:
            tree[pid] = stats[pid]
        pending.extend(children.get(pid, []))
    return tree


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of a process and its running descendants (``billing worker
    --processes N`` runs its workers as child processes)."""
    return sum(_stat_cpu_seconds(stat) for stat in _process_tree(root).values())


def postgres_cpu_seconds() -> float:
    """CPU seconds of PostgreSQL: its running processes plus the backends that have exited
    (the postmaster's reaped children, fields 16-17 of its stat). _stack's reading counts
    only running processes, so the connections of a CLI process that has ended vanish
    from it. Every database on the server counts: other jobs' queries too."""
    total = 0.0
    for path in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            line = path.read_text()
            if "(postgres)" not in line and "(postmaster)" not in line:
                continue
            total += _stat_cpu_seconds(line)
            fields = line.rsplit(")", 1)[1].split()
            if fields[1] == "1" or not _is_postgres(int(fields[1])):  # the postmaster
                total += (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    return total


def _is_postgres(pid: int) -> bool:
    try:
        line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return "(postgres)" in line or "(postmaster)" in line


async def _pollers(client: Client, kind: TaskQueueType.ValueType, task_queue: str) -> int:
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=kind,
        )
    )
    return len({poller.identity for poller in response.pollers})


@contextlib.asynccontextmanager
async def start_workers(
    billing: Path, processes: int, env: dict[str, str], scratch: Path, client: Client
) -> AsyncIterator[int]:
    """``billing worker --processes N`` until N processes poll for workflow and activity
    tasks; yields its pid; SIGTERM (which it forwards to its workers) on exit."""
    task_queue = env["BILLING_TASK_QUEUE"]
    with (scratch / "worker.log").open("wb") as log:
        process = subprocess.Popen(
            [str(billing), "worker", "--processes", str(processes)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=scratch,
        )
    try:
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                tail = (scratch / "worker.log").read_text()[-2000:]
                raise RuntimeError(f"billing worker exited ({process.returncode}): {tail}")
            workflow = await _pollers(client, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, task_queue)
            activity = await _pollers(client, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY, task_queue)
            if workflow >= processes and activity >= processes:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"after {WORKER_START_TIMEOUT:.0f} s, {workflow} workflow and {activity} "
                    f"activity pollers of {processes} worker processes"
                )
            await asyncio.sleep(0.5)
        yield process.pid
    finally:
        tree = list(_process_tree(process.pid))
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, WORKER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                for pid in tree:  # the worker processes too, by the pids it started
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                process.wait()


async def history_gaps(client: Client, workflow_id: str, min_gap: float = 2.0) -> dict[str, Any]:
    """Where a period's time went, from its history: its length, the gaps over ``min_gap``
    seconds between two events (with the activity they wait on), activity attempts past the
    first and timeouts."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    events = list(history.events)
    scheduled: dict[int, str] = {}
    gaps: list[dict[str, Any]] = []
    retries: list[str] = []
    timeouts: list[str] = []
    for previous, event in itertools.pairwise(events):
        name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        if event.HasField("activity_task_scheduled_event_attributes"):
            activity = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = activity
        if event.HasField("activity_task_started_event_attributes"):
            started = event.activity_task_started_event_attributes
            scheduled[event.event_id] = scheduled.get(started.scheduled_event_id, "?")
            if started.attempt > 1:
                retries.append(f"{scheduled[event.event_id]} attempt {started.attempt}")
        if "TIMED_OUT" in name:
            timeouts.append(name)
        gap = (event.event_time.ToDatetime() - previous.event_time.ToDatetime()).total_seconds()
        if gap > min_gap:
            gaps.append(
                {
                    "seconds": round(gap, 1),
                    "after": EventType.Name(previous.event_type).removeprefix("EVENT_TYPE_"),
                    "before": name,
                    "activity": scheduled.get(previous.event_id),
                }
            )
    span = (events[-1].event_time.ToDatetime() - events[0].event_time.ToDatetime()).total_seconds()
    return {
        "workflow_id": workflow_id,
        "events": len(events),
        "seconds": round(span, 1),
        "gaps": gaps,
        "activity_retries": retries,
        "timeouts": timeouts,
    }
