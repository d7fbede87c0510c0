"""Temporal's errors turned into :mod:`starter.errors`, with the stored invoice's reason.

A period's workflow that is gone (completed, or never started) answers NOT_FOUND; the
stored invoice, when there is one, says why: finalized, closed, or never started.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NoReturn

from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from billing.models import Invoice, InvoiceStatus
from starter.errors import BillingClientError, InvoiceFinalized, NoBillingPeriod, Refused

__all__ = ["DONE", "closed_reason", "describe", "not_editable", "raise_translated"]

DONE = (InvoiceStatus.FINALIZED, InvoiceStatus.CLOSED)


def not_editable(invoice: Invoice) -> str:
    label = invoice.number if invoice.status == InvoiceStatus.FINALIZED else invoice.id
    return f"invoice {label} is {invoice.status.value}: it can no longer change"


def closed_reason(workflow_id: str, invoice: Invoice | None) -> str:
    """Why a period whose workflow completed refuses a change."""
    if invoice is not None:
        return not_editable(invoice)
    return f"billing period {workflow_id} has completed: it can no longer change"


def describe(err: BaseException) -> str:
    """One line for a launch that failed (``billing period start-all``)."""
    if isinstance(err, RPCError):
        return f"Temporal: {err.message}"
    return str(err) or type(err).__name__


async def raise_translated(
    err: BaseException,
    workflow_id: str,
    find_invoice: Callable[[], Awaitable[Invoice | None]],
) -> NoReturn:
    """Raise ``err`` as a :mod:`starter.errors` error (``find_invoice``: the period's)."""
    if isinstance(err, BillingClientError):
        raise err
    if isinstance(err, WorkflowUpdateFailedError):
        cause: BaseException | None = err.cause
        while cause is not None and not isinstance(cause, ApplicationError):
            cause = getattr(cause, "cause", None)
        if isinstance(cause, ApplicationError):
            if cause.type == "InvoiceNotEditable":
                raise InvoiceFinalized(cause.message) from None
            raise Refused(cause.message) from None
        raise Refused(str(err.cause or err)) from None
    if isinstance(err, RPCError):
        if err.status == RPCStatusCode.NOT_FOUND:
            invoice = await find_invoice()
            if invoice is not None and invoice.status in DONE:
                raise InvoiceFinalized(not_editable(invoice)) from None
            if "completed" in err.message or invoice is not None:
                raise InvoiceFinalized(closed_reason(workflow_id, invoice)) from None
            raise NoBillingPeriod(workflow_id) from None
        raise Refused(f"Temporal refused the request: {err.message}") from None
    raise err
