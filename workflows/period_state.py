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
from typing import Any

from pydantic import BaseModel

from activities.invoices import PeriodSettings
from billing.models import Invoice, InvoicePreview
from billing.timeline import SYSTEM_ACTOR
from workflows.messages import BillingPeriodInput, PeriodPhase

__all__ = ["UNNAMED_APPROVER", "PeriodState", "share_field_sets"]

UNNAMED_APPROVER = "unnamed"  # an approval sent without requested_by

# One set of field names per combination, for every frozen model a cached period keeps.
_FIELD_SETS: dict[frozenset[str], set[str]] = {}


def share_field_sets(value: Any) -> None:
    """Let ``value``'s frozen pydantic models (nested ones too) share their set of fields.

    Pydantic gives every instance its own ``__pydantic_fields_set__``: ~1 KiB for an
    invoice's twenty fields, ~8 KiB per cached period in all (bench/README.md). A frozen
    model never changes its set (a copy gets a copy), and an equal set answers the same,
    so equal sets can be one object. Nothing the workflow sends or records changes.
    """
    if isinstance(value, BaseModel):
        fields = value.__pydantic_fields_set__
        if not value.model_config.get("frozen"):
            return  # assigning a field adds it to the instance's own set
        shared = _FIELD_SETS.setdefault(frozenset(fields), set(fields))
        if fields is not shared:
            object.__setattr__(value, "__pydantic_fields_set__", shared)
        for name in type(value).model_fields:
            share_field_sets(getattr(value, name))
    elif isinstance(value, list | tuple):
        for item in value:
            share_field_sets(item)


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
    finalize_requested_by: str | None = None
    # An approval asked for (approve_invoice): finalize now, whatever the approval rules say.
    approval_requested: bool = False
    approved_by: str | None = None
    approval_note: str | None = None
    # When a held invoice approves itself (the approval rules' auto_approve_after_hours).
    auto_approve_at: datetime | None = None
    # The JSON of the invoice as finalization would make it now (``preview``).
    preview_json: bytes | None = None
    events_accepted: int = 0
    events_duplicated: int = 0
    webhooks_delivered: int = 0
    webhooks_failed: int = 0
    # This run's shape (workflows.versions.consult sets them once per run).
    shape_known: bool = False
    lean_shape: bool = False  # patch "lean-period-shape"
    local_store_steps: bool = False  # usage, draft, finalization as local activities
    # Patch "local-edits-usage-as-received": an operator's edits as local activities, and
    # usage signals reaching their store step as received.
    local_edits: bool = False
    # Patch "draft-finalizes-when-due": a grace period of zero ends in the draft's own step.
    finalize_with_draft: bool = False

    def __setattr__(self, name: str, value: Any) -> None:
        share_field_sets(value)  # the models a cached period holds for as long as it waits
        super().__setattr__(name, value)

    @property
    def usage_as_received(self) -> bool:
        """Usage signals reach their store step as received (the same patch as edits)."""
        return self.local_edits

    @property
    def preview(self) -> InvoicePreview | None:
        """The invoice as finalization would make it now, from the last change of the draft.

        Kept as its JSON: the ``preview`` query reads it now and then, while the period
        may wait in its grace period for days; as models it is a few KiB more per cached
        period (bench/README.md, "What a cached period holds").
        """
        if self.preview_json is None:
            return None
        return InvoicePreview.model_validate_json(self.preview_json)

    @preview.setter
    def preview(self, value: InvoicePreview | None) -> None:
        self.preview_json = None if value is None else value.model_dump_json().encode()

    def wants_to_finalize(self) -> bool:
        """Whether someone asked to end the wait now: finalize-now ends a grace period (not
        a hold), an approval ends either."""
        if self.phase == PeriodPhase.DRAFT:
            return self.finalize_requested or self.approval_requested
        return self.phase == PeriodPhase.AWAITING_APPROVAL and self.approval_requested

    def approval_to_give(self) -> tuple[str | None, str | None]:
        """Who approves the coming finalization, and their note; (None, None): nobody.

        A held invoice whose auto-approval time passed is approved by the system.
        """
        if self.approval_requested:
            return self.approved_by or UNNAMED_APPROVER, self.approval_note
        if self.phase == PeriodPhase.AWAITING_APPROVAL and self.auto_approve_at is not None:
            moment = self.auto_approve_at.isoformat()
            return SYSTEM_ACTOR, f"approved automatically: nobody approved it by {moment}"
        return None, None

    def ask_approval(self, approved_by: str | None, note: str | None) -> None:
        """Record the first approval asked for; later ones change nothing."""
        if not self.approval_requested:
            self.approval_requested = True
            self.approved_by = approved_by
            self.approval_note = note
