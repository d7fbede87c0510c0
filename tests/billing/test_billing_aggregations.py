"""Aggregations (docs/architecture.md, business rules), through the public ``billing.pricing.aggregate``."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from billing.aggregations import latest_value
from billing.errors import InvalidEventValue
from billing.models import AggregationType
from billing.pricing import aggregate

START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 2, 1, tzinfo=UTC)  # 31 days


def day(n: float) -> datetime:
    """The instant ``n`` days after the period start."""
    return START + timedelta(days=n)


def agg(kind: str, events: list[tuple[datetime, Any]]) -> Decimal:
    return aggregate(kind, events, START, END)


@pytest.mark.parametrize("kind", [kind.value for kind in AggregationType])
def test_no_events_aggregate_to_zero(kind: str) -> None:
    assert agg(kind, []) == 0


def test_count_counts_events_in_the_period() -> None:
    events = [(day(0), None), (day(3), 7), (day(30.9), "x"), (END, 1), (START - timedelta(1), 1)]
    assert agg("count", events) == 3


def test_sum_reads_values_as_decimals() -> None:
    events = [(day(1), "1.1"), (day(2), 2), (day(3), 0.1), (day(4), Decimal("10.25"))]
    assert agg("sum", events) == Decimal("13.45")


def test_sum_ignores_events_outside_the_half_open_period() -> None:
    events = [(START, 5), (END - timedelta(microseconds=1), 7), (END, 100), (day(-1), 100)]
    assert agg(AggregationType.SUM, events) == 12


def test_max() -> None:
    assert agg("max", [(day(1), "3"), (day(2), "12.5"), (day(3), 4)]) == Decimal("12.5")


def test_unique_count_counts_distinct_values() -> None:
    events = [(day(1), "user-a"), (day(2), "user-b"), (day(3), "user-a"), (day(4), None)]
    assert agg("unique_count", events) == 2


def test_latest_is_the_value_of_the_last_event_by_timestamp() -> None:
    # Given out of order: the last by timestamp is day 20.
    events = [(day(20), "8"), (day(1), "3"), (day(10), "50")]
    assert agg("latest", events) == 8


def test_latest_negative_becomes_zero() -> None:
    assert agg("latest", [(day(1), 10), (day(2), "-4")]) == 0


def test_weighted_sum_example() -> None:
    # Level 0 until day 10, +10 -> 10 until day 20, -4 -> 6 until day 31:
    # (0 x 10 + 10 x 10 + 6 x 11) / 31 = 166 / 31.
    events = [(day(10), 10), (day(20), -4)]
    assert agg("weighted_sum", events) == Decimal(166) / Decimal(31)


def test_weighted_sum_level_present_all_period_equals_the_level() -> None:
    assert agg("weighted_sum", [(START, "12")]) == 12


def test_weighted_sum_half_period() -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC)
    events = [(datetime(2026, 1, 2, tzinfo=UTC), 10)]
    assert aggregate("weighted_sum", events, start, end) == 5


def test_weighted_sum_out_of_order_and_outside_events() -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 5, tzinfo=UTC)
    events = [
        (datetime(2026, 1, 3, tzinfo=UTC), 2),
        (datetime(2026, 1, 2, tzinfo=UTC), 4),
        (datetime(2026, 1, 6, tzinfo=UTC), 1000),
    ]
    # 0 for 1 day, 4 for 1 day, 6 for 2 days: (0 + 4 + 12) / 4 = 4.
    assert aggregate("weighted_sum", events, start, end) == 4


def test_non_numeric_value_is_a_clear_error() -> None:
    with pytest.raises(InvalidEventValue, match="'abc' is not a number"):
        agg("sum", [(day(1), "abc")])
    with pytest.raises(InvalidEventValue):
        agg("max", [(day(1), True)])


def test_unknown_aggregation_is_refused() -> None:
    with pytest.raises(ValueError):
        agg("median", [(day(1), 1)])


def test_latest_value_is_the_one_clamp_of_a_negative_latest() -> None:
    assert latest_value(Decimal("-4")) == 0
    assert latest_value(Decimal("7.5")) == Decimal("7.5")
    assert latest_value(None) == 0
