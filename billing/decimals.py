"""How a decimal is written in JSON: fixed-point digits, never an exponent, never ``-0``.

``str(Decimal)`` switches to exponent form for small and large values (``0E-25``,
``1E+3``), and keeps the sign of a negative zero (``-0``); a finance team reads neither.
Every ``Decimal`` field of a model that leaves the process (invoice JSON, webhook bodies,
Temporal payloads and query results) is a :data:`PlainDecimal`, so the rule lives here once.
Reading accepts every form as before, so payloads written earlier (``"0E-25"``) still decode.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import PlainSerializer

__all__ = ["PlainDecimal", "plain_decimal"]


def plain_decimal(value: Decimal) -> str:
    """Fixed-point text with every digit; any zero is ``"0"`` (no sign, no scale).

    >>> [plain_decimal(Decimal(text)) for text in ("0E-25", "-0.00", "1E+3", "12.50", "-1E-7")]
    ['0', '0', '1000', '12.50', '-0.0000001']
    """
    if value.is_zero():
        return "0"
    return format(value, "f")


PlainDecimal = Annotated[Decimal, PlainSerializer(plain_decimal, return_type=str, when_used="json")]
"""A ``Decimal`` field written by :func:`plain_decimal` in JSON; Python dumps keep the ``Decimal``."""
