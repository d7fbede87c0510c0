"""Rules about a subscription's plan that more than one step needs."""

from __future__ import annotations

from collections.abc import Iterable

from billing.errors import UnknownCharge

__all__ = ["require_charge"]


def require_charge(charge_code: str, charge_codes: Iterable[str]) -> None:
    """Refuse a fee edit for a charge the plan does not have.

    >>> require_charge("api_calls", ["api_calls", "storage"])
    >>> require_charge("nope", ["api_calls"])
    Traceback (most recent call last):
    ...
    billing.errors.UnknownCharge: charge 'nope' is not part of this subscription's plan (charges: api_calls)
    """
    codes = list(charge_codes)
    if charge_code not in codes:
        known = ", ".join(codes) or "none"
        raise UnknownCharge(
            f"charge {charge_code!r} is not part of this subscription's plan (charges: {known})"
        )
