"""The live state of one billing period, shared by the workflow and its helper modules.

The workflow module holds the lifecycle only; its phase rules (``workflows.phases``),
inbox (``workflows.inbox``), input handlers (``workflows.commands``), presentation
(``workflows.presentation``) and continue-as-new hand-over (``workflows.handover``) live
in modules of their own, imported through
``workflow.unsafe.imports_passed_through()``. That placement matters: the sandbox
executes the workflow module again for every period it loads, while passed-through
modules are loaded once per process. A class that is costly to build (a pydantic model
costs ~5 ms and ~25 KiB per period) belongs in a passed-through module, never in the
workflow module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from activities.invoices import PeriodSettings
from billing.models import Invoice
from workflows.messages import BillingPeriodInput, PeriodPhase

__all__ = ["PeriodState"]


@dataclass
class PeriodState:
    """Where the period is: its phase, its customer's settings, its invoice, its counters."""

    input: BillingPeriodInput
    phase: PeriodPhase = PeriodPhase.OPEN
    settings: PeriodSettings | None = None
    invoice: Invoice | None = None
    grace_period_ends_at: datetime | None = None
    refresh_due_at: datetime | None = None
    finalize_requested: bool = False
    events_accepted: int = 0
    events_duplicated: int = 0
    webhooks_delivered: int = 0
    webhooks_failed: int = 0
    # This run follows the lean shape (patch "lean-period-shape"): set once per run.
    lean_shape: bool = False
