"""Currency minor units and the one rounding rule (ROUND_HALF_UP, once per fee)."""

from __future__ import annotations

from decimal import Decimal

__all__ = ["from_cents", "minor_units", "to_cents"]


def minor_units(currency: str) -> int:
    """Number of decimal places of ``currency`` (2 for USD/EUR, 0 for JPY, 3 for KWD)."""
    raise NotImplementedError


def to_cents(amount: Decimal, currency: str) -> int:
    """Round an amount in currency units to minor units, ROUND_HALF_UP; negatives become 0."""
    raise NotImplementedError


def from_cents(cents: int, currency: str) -> Decimal:
    """Minor units back to currency units."""
    raise NotImplementedError
