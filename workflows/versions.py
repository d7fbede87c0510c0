"""Which shape of the lifecycle a run of the billing period follows: its patches.

A change of what the workflow does (its commands) ships behind a patch, so that a period
started on an earlier release replays its history on the new code and keeps its shape
to its end (docs/UPGRADES.md lists each patch and when it can go). The shape patches are
consulted once per run, newest first, by :func:`consult`: a run that records the newest
began on code that has every earlier one and consults none of them (one marker per run).
"""

from __future__ import annotations

from temporalio import workflow

from workflows.period_state import PeriodState

__all__ = [
    "PATCH_DRAFT_FINALIZES_WHEN_DUE",
    "PATCH_INPUTS_BEFORE_DEADLINE",
    "PATCH_LEAN_PERIOD_SHAPE",
    "PATCH_LOCAL_EDITS_USAGE_AS_RECEIVED",
    "PATCH_LOCAL_STORE_STEPS",
    "PATCH_STORE_REJECTIONS_PROMPTLY",
    "consult",
]

# Before the lean shape, consulted where they apply (the lean shape has both).
PATCH_STORE_REJECTIONS_PROMPTLY = "store-rejections-promptly"
PATCH_INPUTS_BEFORE_DEADLINE = "apply-inputs-received-before-deadline"
# One store step at period end (settings, draft, drafted webhook), search attributes
# given at start and upserted only when they change.
PATCH_LEAN_PERIOD_SHAPE = "lean-period-shape"
# The lean shape with its own store steps (usage, draft, finalization) as local activities.
PATCH_LOCAL_STORE_STEPS = "local-store-steps"
# An operator's edits as local activities too (one workflow task per edit), and usage
# signals crossing the workflow as received (JSON text), validated by their store step.
PATCH_LOCAL_EDITS_USAGE_AS_RECEIVED = "local-edits-usage-as-received"
# That shape, with a grace period of zero finalized (closed, held) by the period-end step
# itself instead of a step of its own right after it.
PATCH_DRAFT_FINALIZES_WHEN_DUE = "draft-finalizes-when-due"


def consult(state: PeriodState) -> PeriodState:
    """Set this run's shape flags on ``state`` the first time it is asked (the run's start,
    or a usage signal delivered with it, whichever comes first); returns ``state``."""
    if not state.shape_known:
        state.shape_known = True
        state.finalize_with_draft = workflow.patched(PATCH_DRAFT_FINALIZES_WHEN_DUE)
        state.local_edits = state.finalize_with_draft or workflow.patched(
            PATCH_LOCAL_EDITS_USAGE_AS_RECEIVED
        )
        state.local_store_steps = state.local_edits or workflow.patched(PATCH_LOCAL_STORE_STEPS)
        state.lean_shape = state.local_store_steps or workflow.patched(PATCH_LEAN_PERIOD_SHAPE)
    return state
