"""Errors of the billing domain.

Exception hierarchy::

    BillingError
    ├── InvalidChargeProperties   charge properties that break a charge model's rules
    ├── InvalidEventValue         an event value an aggregation cannot read as a number
    ├── InvalidCatalog            a catalog that cannot be loaded (path of the bad field)
    ├── UnknownCharge             a fee edit naming a charge the plan does not have
    ├── InvoiceNotEditable        any change aimed at a finalized or closed invoice
    └── NotFound                  a customer, subscription or invoice that does not exist

Every message says what was wrong and, where it helps, how to fix it. Activities turn
these into non-retryable ``ApplicationError`` s with the class name as the error type.
"""

from __future__ import annotations

__all__ = [
    "BillingError",
    "InvalidCatalog",
    "InvalidChargeProperties",
    "InvalidEventValue",
    "InvoiceNotEditable",
    "NotFound",
    "UnknownCharge",
]


class BillingError(Exception):
    """Base of every domain error."""


class InvalidChargeProperties(BillingError):
    """Charge properties that break the rules of their charge model."""


class InvalidEventValue(BillingError, ValueError):
    """An event value that a numeric aggregation cannot read as a finite number."""


class InvalidCatalog(BillingError):
    """A catalog that cannot be loaded; the message names the offending field's path."""


class UnknownCharge(BillingError):
    """A fee edit naming a charge that the subscription's plan does not have."""


class InvoiceNotEditable(BillingError):
    """A change aimed at an invoice that is no longer a draft."""

    def __init__(self, number_or_id: str, status: str) -> None:
        super().__init__(f"invoice {number_or_id} is {status}")
        self.number_or_id = number_or_id
        self.status = status


class NotFound(BillingError):
    """A customer, subscription, invoice or delivery that does not exist."""
