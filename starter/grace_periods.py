"""Running drafts follow a changed grace period: find them, nudge their workflows.

After ``billing catalog load`` changes ``grace_period_days`` (of a billing entity or a
customer), :func:`follow_settings` finds every running draft whose deadline is no longer
(moment drafted + the grace period the settings give now)
(:func:`services.grace_periods.drafts_to_follow_settings`, one query) and sends each
period's workflow the ``recompute_grace_period`` signal. The workflow does the rest: it
recomputes the deadline in the store (recording ``grace_period_changed`` in the
invoice's timeline) and moves its grace timer; a deadline now in the past finalizes the
invoice at once, or holds it for approval.

Signals go out concurrently, at most ``concurrency`` in flight: a signal is one short
round trip to the server, which answers once the signal is in the history, so 10,000
drafts are nudged in seconds (bench/retime.py). The workflows then move their deadlines
as fast as the workers take their workflow tasks; :func:`wait_until_followed` watches the
store until they did.

A draft whose workflow is gone (never started on this namespace, terminated, or
completed while the store still says draft) is reported as ``missing``, not fatal;
another error of the server is reported as ``failed``, with its message. A nudge is
harmless to repeat: a draft whose deadline already follows its settings records nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

import sqlalchemy
from pydantic import BaseModel, Field
from temporalio.client import Client
from temporalio.service import RPCError

from config.settings import Settings
from services.grace_periods import DraftToFollow, drafts_to_follow_settings
from starter.bulk import FOLLOW_CONCURRENCY
from starter.periods import signal_running_period
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import RecomputeGracePeriod

__all__ = [
    "DEFAULT_FOLLOW_CONCURRENCY",
    "FollowReport",
    "NotNudged",
    "Nudge",
    "follow_after_catalog_load",
    "follow_settings",
    "nudge",
    "wait_until_followed",
]

DEFAULT_FOLLOW_CONCURRENCY = FOLLOW_CONCURRENCY


class Nudge(BaseModel):
    """One draft that was not nudged: its workflow is gone, or the server refused."""

    invoice_id: str
    workflow_id: str
    subscription_external_id: str
    period_start: datetime
    reason: str


class FollowReport(BaseModel):
    """What :func:`follow_settings` did: drafts found, nudged, missing and failed."""

    drafts: int = 0  # running drafts whose deadline no longer follows their settings
    nudged: int = 0  # signalled: their workflows move their deadlines
    missing: list[Nudge] = Field(default_factory=list)  # workflow gone: not nudged
    failed: list[Nudge] = Field(default_factory=list)  # the server refused: try again
    seconds: float = 0.0  # finding and signalling, not the workflows' own work
    requested_by: str | None = None
    unmoved: list[str] | None = None  # waited for: nudged drafts whose deadline had not moved
    nudged_invoice_ids: list[str] = Field(default_factory=list, exclude=True)

    def summary(self) -> str:
        text = f"{self.nudged} running draft{'' if self.nudged == 1 else 's'} nudged"
        if self.missing:
            text += f", {len(self.missing)} with no running workflow"
        if self.failed:
            text += f", {len(self.failed)} failed"
        if self.unmoved is not None:
            text += (
                f"; {len(self.unmoved)} not moved yet"
                if self.unmoved
                else "; every nudged deadline moved"
            )
        return text


async def nudge(
    client: Client,
    drafts: list[DraftToFollow],
    *,
    requested_by: str | None = None,
    concurrency: int = DEFAULT_FOLLOW_CONCURRENCY,
    on_outcome: Callable[[int], None] | None = None,
) -> FollowReport:
    """Signal ``recompute_grace_period`` to each draft's workflow, ``concurrency`` at once.

    ``on_outcome(total)`` is called after each signal (a progress bar).
    """
    report = FollowReport(drafts=len(drafts), requested_by=requested_by)
    message = RecomputeGracePeriod(requested_by=requested_by)
    semaphore = asyncio.Semaphore(max(1, concurrency))

    def note(draft: DraftToFollow, reason: str) -> Nudge:
        return Nudge(
            invoice_id=draft.invoice_id,
            workflow_id=draft.workflow_id,
            subscription_external_id=draft.subscription_external_id,
            period_start=draft.period_start,
            reason=reason,
        )

    async def one(draft: DraftToFollow) -> None:
        async with semaphore:
            try:
                gone = await signal_running_period(
                    client, draft.workflow_id, BillingPeriodWorkflow.recompute_grace_period, message
                )
            except RPCError as err:
                report.failed.append(note(draft, f"{err.status.name}: {err.message}"))
            except Exception as err:  # reported per draft; the others are still nudged
                report.failed.append(note(draft, f"{type(err).__name__}: {err}"))
            else:
                if gone is None:
                    report.nudged += 1
                    report.nudged_invoice_ids.append(draft.invoice_id)
                else:
                    report.missing.append(note(draft, f"no running workflow: {gone}"))
        if on_outcome is not None:
            on_outcome(len(drafts))

    await asyncio.gather(*(one(draft) for draft in drafts))
    return report


async def follow_settings(
    client: Client,
    engine: sqlalchemy.Engine,
    *,
    requested_by: str | None = None,
    concurrency: int = DEFAULT_FOLLOW_CONCURRENCY,
    drafts: list[DraftToFollow] | None = None,
    on_outcome: Callable[[int], None] | None = None,
) -> FollowReport:
    """Nudge every running draft whose deadline no longer follows its settings.

    ``drafts`` are the ones to nudge when the caller already looked them up (``billing
    catalog load`` does, to need no Temporal connection when there are none).
    """
    began = time.monotonic()
    if drafts is None:
        drafts = await asyncio.to_thread(drafts_to_follow_settings, engine)
    report = await nudge(
        client, drafts, requested_by=requested_by, concurrency=concurrency, on_outcome=on_outcome
    )
    report.seconds = round(time.monotonic() - began, 3)
    return report


async def wait_until_followed(
    engine: sqlalchemy.Engine,
    invoice_ids: list[str],
    *,
    timeout: float,
    poll_seconds: float = 0.5,
) -> list[str]:
    """Wait until none of ``invoice_ids`` is a draft still to follow; returns those left.

    A draft followed once its deadline is the one its settings give (or it is no longer a
    plain draft: finalized, closed, held). Empty when all followed within ``timeout``.
    """
    waiting = set(invoice_ids)
    deadline = time.monotonic() + timeout
    while waiting:
        asked = time.monotonic()
        still = {d.invoice_id for d in await asyncio.to_thread(drafts_to_follow_settings, engine)}
        waiting &= still
        if not waiting or time.monotonic() >= deadline:
            break
        # The query reads every running draft: with many, ask less often (at most ~20 %
        # of the time), leaving the database and the CPU to the workers that move them.
        await asyncio.sleep(max(poll_seconds, 4 * (time.monotonic() - asked)))
    return sorted(waiting)


class NotNudged(Exception):
    """Running drafts need a nudge, but Temporal could not be reached."""

    def __init__(self, drafts: int, reason: str) -> None:
        super().__init__(reason)
        self.drafts = drafts
        self.reason = reason


async def follow_after_catalog_load(
    settings: Settings, *, requested_by: str | None = None
) -> FollowReport:
    """What ``billing catalog load`` does after a load: find, then nudge, the drafts.

    The store is asked first: when no draft has to follow (the load changed no grace
    period, or nothing runs), no Temporal connection is made at all, so a first load
    before the stack is up just works. Raises :class:`NotNudged` when drafts need a nudge
    and Temporal cannot be reached (the catalog stays loaded; ``billing period
    follow-settings`` nudges them later).
    """
    from config.temporal import connect
    from store.db import make_engine

    engine = make_engine(settings.database_url)
    try:
        began = time.monotonic()
        drafts = await asyncio.to_thread(drafts_to_follow_settings, engine)
        if not drafts:
            return FollowReport(requested_by=requested_by)
        try:
            client = await connect(settings)
        except Exception as err:
            raise NotNudged(
                len(drafts), f"cannot connect to Temporal at {settings.temporal_address}: {err}"
            ) from None
        report = await nudge(client, drafts, requested_by=requested_by)
        report.seconds = round(time.monotonic() - began, 3)
        return report
    finally:
        engine.dispose()
