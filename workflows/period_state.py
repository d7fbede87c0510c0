"""What a billing period carries from one workflow run to the next (continue-as-new).

These classes live in their own module, passed through the sandbox, rather than in the
workflow's module: the sandbox executes the workflow module again for every period it
loads, and building a pydantic model class there cost ~5 ms and ~25 KiB per period
(bench/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from activities.invoices import PeriodSettings
from billing.models import Invoice
from workflows.messages import BillingPeriodInput, PeriodPhase, Rejection

__all__ = ["CarriedState", "QueuedCommand", "carried_state"]


class CarriedState(BaseModel):
    """What a period carries over to its next run when it continues as new."""

    phase: PeriodPhase
    settings: PeriodSettings | None = None
    invoice: Invoice | None = None
    grace_period_ends_at: datetime | None = None
    refresh_due_at: datetime | None = None
    finalize_requested: bool = False
    events_accepted: int = 0
    events_duplicated: int = 0
    inputs_rejected: int = 0
    rejections: list[Rejection] = []
    sequence: int = 0


def carried_state(input: BillingPeriodInput) -> CarriedState:
    """The state handed over by the previous run, or a fresh open period."""
    if input.carried_state is None:
        return CarriedState(phase=PeriodPhase.OPEN)
    return CarriedState.model_validate(input.carried_state)


@dataclass
class QueuedCommand:
    """One queued mutation; an update waits on ``done`` for its result or error."""

    kind: str
    message: Any  # the validated model; a usage signal's decoded payload until applied
    from_update: bool
    done: bool = False
    result: Any = None
    error: ApplicationError | None = None
    received_at: datetime = field(default_factory=lambda: workflow.now())
