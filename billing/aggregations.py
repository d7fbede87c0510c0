"""Aggregations of a billable metric over one period's events.

Every aggregation takes ``(timestamp, value)`` pairs, ignores events outside the half-open
period ``[start, end)`` and returns a ``Decimal`` (0 when no event is left). Values may be
``str``, ``int``, ``float`` or ``Decimal``; numeric aggregations read them as
``Decimal(str(value))`` so that ``0.1`` stays ``0.1``. A ``None`` value (the event lacks
the property) is skipped by every aggregation except ``count``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from billing.errors import InvalidEventValue
from billing.models import AggregationType

__all__ = ["aggregate", "latest_value", "to_decimal"]

Event = tuple[datetime, Any]


def aggregate(
    aggregation_type: AggregationType | str,
    events: Iterable[tuple[datetime, Any]],
    period_start: datetime,
    period_end: datetime,
) -> Decimal:
    """Aggregate ``(timestamp, value)`` pairs of one period.

    >>> from datetime import datetime, UTC
    >>> jan, feb = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    >>> aggregate("sum", [(jan, "1.5"), (jan, 2), (feb, 100)], jan, feb)
    Decimal('3.5')
    """
    kind = AggregationType(aggregation_type)
    start, end = _utc(period_start), _utc(period_end)
    # Sorted by timestamp; the sort is stable, so equal timestamps keep their given order.
    in_period = sorted(
        ((_utc(at), value) for at, value in events if start <= _utc(at) < end),
        key=lambda event: event[0],
    )
    return _AGGREGATIONS[kind](in_period, start, end)


def to_decimal(value: Any) -> Decimal:
    """An event value as a finite ``Decimal``; raises ``InvalidEventValue`` otherwise."""
    if isinstance(value, bool):
        raise InvalidEventValue(f"event value {value!r} is not a number")
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise InvalidEventValue(f"event value {value!r} is not a number") from None
    if not number.is_finite():
        raise InvalidEventValue(f"event value {value!r} is not a finite number")
    return number


def latest_value(last: Decimal | None) -> Decimal:
    """What a ``latest`` aggregation bills for the period's last value (none: 0).

    A negative latest value bills nothing::

        >>> latest_value(Decimal("-4")), latest_value(Decimal("7")), latest_value(None)
        (Decimal('0'), Decimal('7'), Decimal('0'))
    """
    return Decimal(0) if last is None else max(last, Decimal(0))


def _count(events: Sequence[Event], start: datetime, end: datetime) -> Decimal:
    return Decimal(len(events))


def _sum(events: Sequence[Event], start: datetime, end: datetime) -> Decimal:
    return sum(_numbers(events), Decimal(0))


def _max(events: Sequence[Event], start: datetime, end: datetime) -> Decimal:
    return max(_numbers(events), default=Decimal(0))


def _unique_count(events: Sequence[Event], start: datetime, end: datetime) -> Decimal:
    # Values are compared as text, as they arrive in the event's JSON properties.
    return Decimal(len({str(value) for _, value in events if value is not None}))


def _latest(events: Sequence[Event], start: datetime, end: datetime) -> Decimal:
    values = _numbers(events)
    return latest_value(values[-1] if values else None)


def _weighted_sum(events: Sequence[Event], start: datetime, end: datetime) -> Decimal:
    """Time-weighted average of a level that starts at 0 and moves by each event's value.

    sum(level_i x duration_i) / period duration, durations in microseconds, e.g. a level
    of 10 for the second half of the period weighs 5.
    """
    period = _microseconds(end - start)
    if period <= 0:
        return Decimal(0)
    level, since, weighted = Decimal(0), start, Decimal(0)
    for at, value in events:
        if value is None:
            continue
        weighted += level * _microseconds(at - since)
        level += to_decimal(value)
        since = at
    weighted += level * _microseconds(end - since)
    return weighted / period


def _numbers(events: Sequence[Event]) -> list[Decimal]:
    return [to_decimal(value) for _, value in events if value is not None]


def _microseconds(delta: timedelta) -> int:
    return delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + delta.microseconds


def _utc(at: datetime) -> datetime:
    # Naive timestamps are read as UTC, so that they compare with aware period bounds.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


_AGGREGATIONS: dict[AggregationType, Callable[[Sequence[Event], datetime, datetime], Decimal]] = {
    AggregationType.COUNT: _count,
    AggregationType.SUM: _sum,
    AggregationType.MAX: _max,
    AggregationType.UNIQUE_COUNT: _unique_count,
    AggregationType.LATEST: _latest,
    AggregationType.WEIGHTED_SUM: _weighted_sum,
}
