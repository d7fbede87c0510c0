"""What each phase of a billing period accepts: the period's state machine in one table.

=============  =========================================  ==================================
phase          accepts                                    a signal arriving in it
=============  =========================================  ==================================
``open``       ``add_usage``                              is queued, judged when applied
``draft``      every input (usage, fee edits, refresh,    is queued, judged when applied
               finalize-now, approve)
``awaiting_    usage, fee edits, refresh, approve          is queued, judged when applied
approval``     (finalize-now leaves it held)
``finalizing`` approve (taken if finalization holds the   is refused at once (approve is
               invoice; answered by the final invoice)    queued)
``finalized``  nothing: the invoice can no longer change  is refused at once
``closed``     nothing: the invoice can no longer change  is refused at once
=============  =========================================  ==================================

``recompute_grace_period`` is accepted in every phase and changes only a draft's
deadline: a catalog change reaching a period that has moved on is not a refusal.

A phase that *applies inputs* is one whose main loop still works off the queue: a signal
waits there and is judged by the phase in force when it is applied (a fee edit sent just
before the period ends may meet the draft). An update is judged twice: by its validator
when it arrives, and again when it is applied.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from temporalio.exceptions import ApplicationError

from billing.models import Invoice
from workflows.messages import PeriodPhase

__all__ = [
    "ADD_USAGE",
    "APPROVE_INVOICE",
    "EDIT_FEE",
    "FINALIZE_INVOICE",
    "FINAL_PHASES",
    "PHASES",
    "RECOMPUTE_GRACE_PERIOD",
    "REFRESH_INVOICE",
    "REMOVE_FEE_ADJUSTMENT",
    "PhaseRule",
    "check_allowed",
]

# The inputs, by their signal names (an update is the signal's name + ``_sync``).
ADD_USAGE = "add_usage"
EDIT_FEE = "edit_fee"
REMOVE_FEE_ADJUSTMENT = "remove_fee_adjustment"
REFRESH_INVOICE = "refresh_invoice"
FINALIZE_INVOICE = "finalize_invoice"
APPROVE_INVOICE = "approve_invoice"
RECOMPUTE_GRACE_PERIOD = "recompute_grace_period"

_EVERY_INPUT = frozenset(
    {
        ADD_USAGE,
        EDIT_FEE,
        REMOVE_FEE_ADJUSTMENT,
        REFRESH_INVOICE,
        FINALIZE_INVOICE,
        APPROVE_INVOICE,
        RECOMPUTE_GRACE_PERIOD,
    }
)
_ALWAYS = frozenset({RECOMPUTE_GRACE_PERIOD})


class PhaseRule(NamedTuple):
    accepts: frozenset[str]
    applies_inputs: bool  # the main loop still works off the queue in this phase


PHASES: dict[PeriodPhase, PhaseRule] = {
    PeriodPhase.OPEN: PhaseRule(accepts=_ALWAYS | {ADD_USAGE}, applies_inputs=True),
    PeriodPhase.DRAFT: PhaseRule(accepts=_EVERY_INPUT, applies_inputs=True),
    PeriodPhase.AWAITING_APPROVAL: PhaseRule(accepts=_EVERY_INPUT, applies_inputs=True),
    # An approval racing a finalization: answered by the final invoice, or taken by the hold.
    PeriodPhase.FINALIZING: PhaseRule(accepts=_ALWAYS | {APPROVE_INVOICE}, applies_inputs=False),
    PeriodPhase.FINALIZED: PhaseRule(accepts=_ALWAYS, applies_inputs=False),
    PeriodPhase.CLOSED: PhaseRule(accepts=_ALWAYS, applies_inputs=False),
}

FINAL_PHASES = (PeriodPhase.FINALIZED, PeriodPhase.CLOSED)


def check_allowed(
    kind: str, phase: PeriodPhase, *, invoice: Invoice | None, period_end: datetime
) -> None:
    """Refuse ``kind`` when ``phase`` does not accept it; the message names the invoice.

    Raises a non-retryable ``ApplicationError``: ``NoDraftYet`` before the period ends,
    ``InvoiceNotEditable`` once the invoice is being finalized or is final.
    """
    if kind in PHASES[phase].accepts:
        return
    if phase == PeriodPhase.OPEN:
        raise ApplicationError(
            f"the period ends at {period_end.isoformat()}: there is no draft "
            f"invoice to {kind.removesuffix('_invoice').replace('_', ' ')} yet",
            type="NoDraftYet",
            non_retryable=True,
        )
    label = invoice.number if invoice and invoice.number else "invoice"
    if phase == PeriodPhase.CLOSED and invoice is not None:
        label = invoice.id
    status = "being finalized" if phase == PeriodPhase.FINALIZING else phase.value
    raise ApplicationError(
        f"invoice {label} is {status}: it can no longer change",
        type="InvoiceNotEditable",
        non_retryable=True,
    )
