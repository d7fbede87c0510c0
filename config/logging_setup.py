"""Structured logs: one JSON object per line, carrying the Temporal context when there is one.

The SDK's ``workflow.logger`` and ``activity.logger`` attach their context to every record
they emit as the ``temporal_workflow`` and ``temporal_activity`` attributes (dicts with
``workflow_id``, ``run_id``, ``activity_type``, ``attempt``, ...). :class:`JsonFormatter`
lifts those into top-level keys, so a log search for a period's workflow id finds every line
about it, on whichever worker it ran::

    {"ts": "2026-02-04T10:00:00.123Z", "level": "WARNING", "logger": "temporalio.workflow",
     "message": "webhook ... not delivered ...", "workflow_id": "billing-period/sub_1/2026-01-01",
     "run_id": "...", "workflow_type": "BillingPeriodWorkflow", "task_queue": "billing-periods",
     "namespace": "default", "attempt": 1, "process": "worker[0]"}

Usage (the worker's composition root)::

    from config.logging_setup import configure_logging
    configure_logging(settings.log_level, process="worker[0]")
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["TEMPORAL_KEYS", "JsonFormatter", "configure_logging"]

# Record attributes set by the SDK's workflow/activity loggers -> top-level keys we keep.
TEMPORAL_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "temporal_workflow": (
        "workflow_id",
        "run_id",
        "workflow_type",
        "task_queue",
        "namespace",
        "attempt",
    ),
    "temporal_activity": (
        "activity_id",
        "activity_type",
        "workflow_id",
        "workflow_run_id",
        "workflow_type",
        "task_queue",
        "namespace",
        "attempt",
    ),
}
# Activity records name the run ``workflow_run_id``; logs use one name for it.
_RENAMES: Final[dict[str, str]] = {"workflow_run_id": "run_id"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line with the Temporal context as top-level keys."""

    def __init__(self, *, process: str | None = None) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for attribute, keys in TEMPORAL_KEYS.items():
            context = getattr(record, attribute, None)
            if not isinstance(context, dict):
                continue
            for key in keys:
                if context.get(key) is not None:
                    line.setdefault(_RENAMES.get(key, key), context[key])
        if self.process is not None:
            line["process"] = self.process
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: str | int = "INFO", *, process: str | None = None) -> None:
    """Send every log record to stderr as a JSON line (replaces existing root handlers).

    The SDK's loggers already append the context to the message text as well (``({...})``);
    that stays for humans, and the JSON keys are for machines.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(process=process))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
