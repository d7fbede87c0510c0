"""Currency minor units and the one rounding rule (ROUND_HALF_UP, once per fee).

Amounts are ``Decimal`` in currency units while they are being computed and ``int`` minor
units (``*_cents``) once rounded. Rounding happens in exactly one place, :func:`to_cents`,
so that "rounded once per fee" is easy to check.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

__all__ = ["from_cents", "minor_units", "to_cents"]

# ISO 4217 currencies whose minor unit is not 2 decimal places; every other code has 2.
# fmt: off
_MINOR_UNITS: dict[str, int] = {
    # no minor unit
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0,
    "XPF": 0,
    # thousandths
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    # ten-thousandths
    "CLF": 4, "UYW": 4,
}
# fmt: on
_DEFAULT_MINOR_UNITS = 2


def minor_units(currency: str) -> int:
    """Number of decimal places of ``currency`` (2 for USD/EUR, 0 for JPY, 3 for KWD).

    >>> minor_units("JPY"), minor_units("usd"), minor_units("KWD")
    (0, 2, 3)
    """
    return _MINOR_UNITS.get(currency.upper(), _DEFAULT_MINOR_UNITS)


def to_cents(amount: Decimal, currency: str) -> int:
    """Round an amount in currency units to minor units, ROUND_HALF_UP; negatives become 0.

    >>> to_cents(Decimal("1.005"), "USD"), to_cents(Decimal("-3"), "USD")
    (101, 0)
    """
    if amount <= 0:
        return 0
    minor = amount.scaleb(minor_units(currency))
    return int(minor.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def from_cents(cents: int, currency: str) -> Decimal:
    """Minor units back to currency units.

    >>> from_cents(1234, "USD"), from_cents(1234, "JPY")
    (Decimal('12.34'), Decimal('1234'))
    """
    return Decimal(cents).scaleb(-minor_units(currency))
