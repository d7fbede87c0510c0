"""A customer's running drafts, refreshed after a change made only in the store.

A coupon given or a wallet topped up is applied at finalization; the running period's
``preview`` query is computed with the draft's last change, so it would not show the
coupon or the credits until the next one. ``billing coupon apply`` and ``billing wallet
top-up`` therefore send ``refresh_invoice`` to the customer's running drafts. Best
effort: the coupon or the credits are stored either way, and ``billing invoice preview``
always computes from the store.
"""

from __future__ import annotations

import asyncio

import sqlalchemy
from temporalio.client import Client

from billing.models import InvoiceStatus
from billing.periods import period_workflow_id
from config.settings import Settings
from services.catalog import get_billing_context
from services.invoices import list_invoices
from starter.periods import signal_running_period
from workflows.billing_period import BillingPeriodWorkflow
from workflows.messages import RefreshInvoice

__all__ = ["customer_draft_workflows", "refresh_after_store_change", "refresh_customer_drafts"]


def customer_draft_workflows(engine: sqlalchemy.Engine, customer_external_id: str) -> list[str]:
    """The workflow ids of the customer's draft invoices (held ones included)."""
    ids = []
    for draft in list_invoices(
        engine, customer_external_id=customer_external_id, status=InvoiceStatus.DRAFT
    ):
        context = get_billing_context(engine, draft.subscription_external_id)
        ids.append(
            period_workflow_id(draft.subscription_external_id, draft.period_start, context.timezone)
        )
    return ids


async def refresh_customer_drafts(
    client: Client, workflow_ids: list[str], *, requested_by: str | None = None
) -> int:
    """Send ``refresh_invoice`` to each; how many were running (a gone one is skipped)."""
    message = RefreshInvoice(reason="a coupon or credits changed", requested_by=requested_by)
    signal = BillingPeriodWorkflow.refresh_invoice
    gone = await asyncio.gather(
        *(signal_running_period(client, wid, signal, message) for wid in workflow_ids)
    )
    return gone.count(None)


def refresh_after_store_change(
    settings: Settings, customer_external_id: str, *, requested_by: str | None = None
) -> str:
    """What the CLI prints after a coupon or a top-up: the drafts refreshed, or why not.

    No Temporal connection is made when the customer has no draft.
    """
    from config.temporal import connect
    from store.db import make_engine

    engine = make_engine(settings.database_url)
    try:
        workflow_ids = customer_draft_workflows(engine, customer_external_id)
    finally:
        engine.dispose()
    if not workflow_ids:
        return "no running draft to refresh"

    async def send() -> int:
        client = await connect(settings)
        return await refresh_customer_drafts(client, workflow_ids, requested_by=requested_by)

    try:
        refreshed = asyncio.run(send())
    except Exception as err:  # stored either way: say how to refresh later
        return (
            f"running drafts not refreshed ({type(err).__name__}: {err}); their previews "
            "show it after their next change (`billing invoice refresh`)"
        )
    return f"{refreshed} running draft(s) refreshed: their previews include it"
