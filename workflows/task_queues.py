"""The task queues of the product, all named from the one a worker is given.

Operators' edits of a draft (fee adjustments, their removal, a refresh asked for) run on a
queue of their own, polled by every worker with slots of its own, so an edit is answered
while a month-end close keeps the main queue's activity slots busy (bench/README.md).
"""

from __future__ import annotations

__all__ = ["edits_task_queue"]


def edits_task_queue(task_queue: str) -> str:
    """The queue of the edit activities of periods running on ``task_queue``."""
    return f"{task_queue}-edits"
