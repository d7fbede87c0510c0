"""Money rounding and calendar periods in the customer's timezone."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from billing.models import BillingEntity, Customer, PlanInterval
from billing.money import from_cents, minor_units, to_cents
from billing.periods import (
    billing_period,
    describe_period,
    period_starting,
    proration_ratio,
    resolve_grace_period_days,
    resolve_timezone,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --------------------------------------------------------------------------- money


@pytest.mark.parametrize(
    ("currency", "digits"), [("USD", 2), ("EUR", 2), ("eur", 2), ("JPY", 0), ("KWD", 3), ("XYZ", 2)]
)
def test_minor_units(currency: str, digits: int) -> None:
    assert minor_units(currency) == digits


@pytest.mark.parametrize(
    ("amount", "currency", "cents"),
    [
        ("1.005", "USD", 101),  # half up, not banker's rounding
        ("1.015", "USD", 102),
        ("1.0049", "USD", 100),
        ("0.125", "EUR", 13),
        ("2.5", "JPY", 3),
        ("1.2345", "KWD", 1235),
        ("-3.50", "USD", 0),  # negatives become 0
        ("0", "USD", 0),
    ],
)
def test_to_cents_rounds_half_up(amount: str, currency: str, cents: int) -> None:
    assert to_cents(Decimal(amount), currency) == cents


def test_from_cents() -> None:
    assert from_cents(1234, "USD") == Decimal("12.34")
    assert from_cents(1234, "JPY") == Decimal("1234")
    assert from_cents(1234, "KWD") == Decimal("1.234")


# --------------------------------------------------------------------------- periods


def test_monthly_period_in_utc() -> None:
    assert billing_period(utc(2026, 1, 11, 12), "UTC", PlanInterval.MONTHLY) == (
        utc(2026, 1, 1),
        utc(2026, 2, 1),
    )


def test_monthly_period_is_local_midnight_to_local_midnight() -> None:
    # 2026-01-31T23:30Z is already February 1st in Paris (UTC+1 in winter).
    start, end = billing_period(utc(2026, 1, 31, 23, 30), "Europe/Paris", PlanInterval.MONTHLY)
    assert (start, end) == (utc(2026, 1, 31, 23), utc(2026, 2, 28, 23))


def test_period_across_a_dst_change_keeps_local_midnights() -> None:
    # New York: EST (UTC-5) in March until the 8th, EDT (UTC-4) from then on.
    start, end = period_starting(date(2026, 3, 1), "America/New_York", PlanInterval.MONTHLY)
    assert start == utc(2026, 3, 1, 5)
    assert end == utc(2026, 4, 1, 4)


def test_event_on_the_end_boundary_belongs_to_the_next_period() -> None:
    _, end = billing_period(utc(2026, 1, 15), "UTC", PlanInterval.MONTHLY)
    assert billing_period(end, "UTC", PlanInterval.MONTHLY)[0] == utc(2026, 2, 1)


def test_yearly_and_december_periods() -> None:
    assert billing_period(utc(2026, 7, 4), "UTC", PlanInterval.YEARLY) == (
        utc(2026, 1, 1),
        utc(2027, 1, 1),
    )
    assert period_starting(date(2026, 12, 1), "UTC", PlanInterval.MONTHLY) == (
        utc(2026, 12, 1),
        utc(2027, 1, 1),
    )


def test_period_starting_refuses_a_day_that_is_not_a_first() -> None:
    with pytest.raises(ValueError, match="first day of a month"):
        period_starting(date(2026, 1, 2), "UTC", PlanInterval.MONTHLY)
    with pytest.raises(ValueError, match="first day of a year"):
        period_starting(date(2026, 2, 1), "UTC", PlanInterval.YEARLY)


def test_describe_period_shows_local_dates_with_an_inclusive_end() -> None:
    start, end = period_starting(date(2026, 1, 1), "Asia/Tokyo", PlanInterval.MONTHLY)
    assert start == utc(2025, 12, 31, 15)
    assert describe_period(start, end, "Asia/Tokyo") == "2026-01-01..2026-01-31"
    assert describe_period(utc(2026, 2, 1), utc(2026, 3, 1), "UTC") == "2026-02-01..2026-02-28"


def test_proration_counts_whole_local_days() -> None:
    start, end = utc(2026, 1, 1), utc(2026, 2, 1)
    # Started January 15 at 18:00: 15..31 is 17 of 31 days, the start day counts in full.
    assert proration_ratio(utc(2026, 1, 15, 18), start, end, "UTC") == Decimal(17) / Decimal(31)
    assert proration_ratio(utc(2025, 6, 1), start, end, "UTC") == 1
    assert proration_ratio(start, start, end, "UTC") == 1
    assert proration_ratio(utc(2026, 2, 1), start, end, "UTC") == 0


def test_proration_uses_the_local_day() -> None:
    start, end = period_starting(date(2026, 1, 1), "America/New_York", PlanInterval.MONTHLY)
    # 2026-01-16T03:00Z is still January 15 in New York: 17 days of 31.
    ratio = proration_ratio(utc(2026, 1, 16, 3), start, end, "America/New_York")
    assert ratio == Decimal(17) / Decimal(31)


def test_resolve_timezone_customer_then_entity_then_utc() -> None:
    entity = BillingEntity(code="acme", name="Acme", invoice_prefix="ACM", timezone="Europe/Paris")
    customer = Customer(external_id="c1", billing_entity_code="acme")
    assert resolve_timezone(customer, entity) == "Europe/Paris"
    tokyo = customer.model_copy(update={"timezone": "Asia/Tokyo"})
    assert resolve_timezone(tokyo, entity) == "Asia/Tokyo"
    no_zone_entity = entity.model_copy(update={"timezone": ""})
    assert resolve_timezone(customer, no_zone_entity) == "UTC"


def test_resolve_grace_period_customer_then_entity() -> None:
    entity = BillingEntity(code="acme", name="Acme", invoice_prefix="ACM", grace_period_days=3)
    customer = Customer(external_id="c1", billing_entity_code="acme")
    assert resolve_grace_period_days(customer, entity) == 3
    none = customer.model_copy(update={"grace_period_days": 0})
    assert resolve_grace_period_days(none, entity) == 0  # a customer's 0 is not "unset"
    longer = customer.model_copy(update={"grace_period_days": 10})
    assert resolve_grace_period_days(longer, entity) == 10
