"""Errors of the billing client and CLI, translated from Temporal and the store.

Exception hierarchy::

    BillingClientError          base: the message says what was wrong and how to fix it
    ├── UnknownSubscription     no subscription with that external id in the catalog
    ├── InvalidRequest          a request that can never succeed as given (bad period start...)
    ├── NoBillingPeriod         the period's workflow was never started and has no invoice
    ├── InvoiceFinalized        the invoice is finalized or closed: it can no longer change
    └── Refused                 the workflow or the store refused the request (reason inside)

The CLI maps ``InvalidRequest`` to exit code 2 and every other one to exit code 1.
"""

from __future__ import annotations

__all__ = [
    "BillingClientError",
    "InvalidRequest",
    "InvoiceFinalized",
    "NoBillingPeriod",
    "Refused",
    "UnknownSubscription",
]


class BillingClientError(Exception):
    """Base of every error the billing client raises."""

    @property
    def message(self) -> str:
        return str(self)


class UnknownSubscription(BillingClientError):
    def __init__(self, subscription_external_id: str) -> None:
        super().__init__(
            f"unknown subscription {subscription_external_id!r}: check the external id "
            "(`billing invoice list` shows known ones) or load it with `billing catalog load`"
        )
        self.subscription_external_id = subscription_external_id


class InvalidRequest(BillingClientError):
    """A request that can never succeed as given."""


class NoBillingPeriod(BillingClientError):
    def __init__(self, workflow_id: str) -> None:
        super().__init__(
            f"no billing period {workflow_id}: it was never started; start it with "
            "`billing period start` (or send usage to it)"
        )
        self.workflow_id = workflow_id


class InvoiceFinalized(BillingClientError):
    """The invoice is no longer a draft; every change to it is refused."""


class Refused(BillingClientError):
    """The workflow or the store refused the request; the message is its reason."""
