"""Webhook signatures: HMAC-SHA256 over ``f"{timestamp}.{body}"`` with the endpoint secret.

Senders put the unix timestamp and :func:`sign`'s hex digest in the
``X-Billing-Webhook-Timestamp`` and ``X-Billing-Webhook-Signature`` headers; receivers call
:func:`verify_signature` with the raw body::

    ok = verify_signature(secret, request.body, int(headers["X-Billing-Webhook-Timestamp"]),
                          headers["X-Billing-Webhook-Signature"], now=int(time.time()))

The timestamp is signed too, so an old request cannot be replayed with a fresh timestamp;
requests older (or newer) than the tolerance are refused.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["DEFAULT_TOLERANCE_SECONDS", "sign", "verify_signature"]

DEFAULT_TOLERANCE_SECONDS = 300


def sign(secret: str, timestamp: int, body: str | bytes) -> str:
    """Hex HMAC-SHA256 of ``f"{timestamp}.{body}"`` keyed with ``secret``.

    >>> sign("whsec", 1700000000, '{"a": 1}') == sign("whsec", 1700000000, b'{"a": 1}')
    True
    """
    payload = f"{timestamp}.".encode() + (body.encode() if isinstance(body, str) else body)
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str,
    body: str | bytes,
    timestamp: int,
    signature: str,
    *,
    now: int,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """True when ``signature`` signs this body at this timestamp, within the tolerance.

    The comparison takes constant time; a timestamp further than ``tolerance_seconds``
    from ``now`` (a replay, or a wrong clock) is refused.
    """
    if abs(now - timestamp) > tolerance_seconds:
        return False
    expected = sign(secret, timestamp, body)
    return hmac.compare_digest(expected.encode(), signature.strip().lower().encode())
