"""Search attributes that let operators find billing periods in the Temporal UI.

They must be registered on the server before any workflow upserts them (an unregistered
key fails every workflow task): `billing dev` registers them on the embedded dev server,
the test fixtures through the operator service, production with
``temporal operator search-attribute create`` (see README).
"""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from workflows.messages import BillingPeriodInput, PeriodPhase

__all__ = [
    "ALL",
    "CUSTOMER",
    "INVOICE_NUMBER",
    "INVOICE_STATUS",
    "PERIOD_START",
    "SUBSCRIPTION",
    "TOTAL_CENTS",
    "at_start",
]

CUSTOMER = SearchAttributeKey.for_keyword("BillingCustomer")
SUBSCRIPTION = SearchAttributeKey.for_keyword("BillingSubscription")
PERIOD_START = SearchAttributeKey.for_datetime("BillingPeriodStart")
INVOICE_STATUS = SearchAttributeKey.for_keyword("BillingInvoiceStatus")
INVOICE_NUMBER = SearchAttributeKey.for_keyword("BillingInvoiceNumber")
TOTAL_CENTS = SearchAttributeKey.for_int("BillingTotalCents")

ALL: tuple[SearchAttributeKey, ...] = (  # type: ignore[type-arg]
    CUSTOMER,
    SUBSCRIPTION,
    PERIOD_START,
    INVOICE_STATUS,
    INVOICE_NUMBER,
    TOTAL_CENTS,
)


def at_start(period: BillingPeriodInput) -> TypedSearchAttributes:
    """The attributes a period is started with: those that never change, status ``open``.

    The workflow then upserts only what changes (status, number, total).
    """
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(SUBSCRIPTION, period.subscription_external_id),
        SearchAttributePair(PERIOD_START, period.period_start),
        SearchAttributePair(INVOICE_STATUS, PeriodPhase.OPEN.value),
    ]
    if period.customer_external_id:
        pairs.append(SearchAttributePair(CUSTOMER, period.customer_external_id))
    return TypedSearchAttributes(pairs)
