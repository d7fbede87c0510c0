"""Event acceptance: the one rule that accepts a usage event into a period or refuses it."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from billing.models import (
    AggregationType,
    BillableMetric,
    BillingContext,
    BillingEntity,
    Customer,
    Plan,
    PlanInterval,
    RejectedEvent,
    Subscription,
    UsageEvent,
)
from billing.usage import TEXT_VALUE_MAX_LENGTH, AcceptedEvent, accept_event

JAN = datetime(2026, 1, 1, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)
METRICS = {
    "calls": BillableMetric(code="calls", aggregation_type=AggregationType.COUNT),
    "storage": BillableMetric(
        code="storage", aggregation_type=AggregationType.SUM, field_name="gb"
    ),
    "users": BillableMetric(
        code="users", aggregation_type=AggregationType.UNIQUE_COUNT, field_name="user_id"
    ),
}
CONTEXT = BillingContext(
    subscription=Subscription(
        external_id="sub", customer_external_id="cust", plan_code="growth", started_at=JAN
    ),
    customer=Customer(external_id="cust", billing_entity_code="acme"),
    billing_entity=BillingEntity(code="acme", name="Acme", invoice_prefix="ACME"),
    plan=Plan(code="growth", interval=PlanInterval.MONTHLY),
    metrics=METRICS,
    timezone="UTC",
    grace_period_days=0,
    currency="USD",
)


def event(
    code: str, at: datetime = JAN, subscription: str = "sub", **properties: Any
) -> UsageEvent:
    return UsageEvent(
        transaction_id="t-1",
        external_subscription_id=subscription,
        code=code,
        timestamp=at,
        properties=properties,
    )


def reason(verdict: AcceptedEvent | RejectedEvent) -> str:
    assert isinstance(verdict, RejectedEvent), verdict
    assert (verdict.transaction_id, verdict.code) == ("t-1", verdict.code)
    return verdict.reason


def test_a_count_event_is_accepted_without_a_value() -> None:
    verdict = accept_event(event("calls"), CONTEXT, JAN, FEB)
    assert verdict == AcceptedEvent(event=event("calls"), number_value=None, text_value=None)


def test_a_numeric_event_keeps_its_value_as_a_decimal() -> None:
    verdict = accept_event(event("storage", gb="1.5"), CONTEXT, JAN, FEB)
    assert isinstance(verdict, AcceptedEvent)
    assert (verdict.number_value, verdict.text_value) == (Decimal("1.5"), None)


def test_a_unique_count_event_keeps_its_value_as_text() -> None:
    verdict = accept_event(event("users", user_id=42), CONTEXT, JAN, FEB)
    assert isinstance(verdict, AcceptedEvent)
    assert (verdict.number_value, verdict.text_value) == (None, "42")


def test_an_event_for_another_subscription_is_refused() -> None:
    refused = accept_event(event("calls", subscription="other"), CONTEXT, JAN, FEB)
    assert reason(refused) == "event for subscription 'other' was sent to subscription 'sub'"


def test_an_unknown_metric_is_refused_with_the_plans_metrics() -> None:
    refused = accept_event(event("seats"), CONTEXT, JAN, FEB)
    assert reason(refused) == (
        "unknown metric code 'seats' for plan 'growth' (its metrics: calls, storage, users)"
    )


def test_an_event_outside_the_period_names_the_period_it_belongs_to() -> None:
    refused = accept_event(event("calls", at=FEB), CONTEXT, JAN, FEB)
    assert reason(refused) == (
        "timestamp 2026-02-01T00:00:00Z is outside the period 2026-01-01..2026-01-31; "
        "it belongs to the period 2026-02-01..2026-02-28"
    )


def test_an_event_too_far_from_any_period_is_refused() -> None:
    december_9999 = datetime(9999, 12, 15, tzinfo=UTC)
    refused = accept_event(event("calls", at=december_9999), CONTEXT, JAN, FEB)
    assert reason(refused).endswith("it is too far from any billing period to be billed")


@pytest.mark.parametrize(
    ("code", "properties", "expected"),
    [
        ("storage", {}, "missing property 'gb': metric 'storage' (sum) reads it"),
        (
            "storage",
            {"gb": "lots"},
            "property 'gb' = 'lots' is not a number: metric 'storage' aggregates it by sum",
        ),
        ("storage", {"gb": True}, "property 'gb' = True is not a number"),
        (
            "users",
            {"user_id": "x" * (TEXT_VALUE_MAX_LENGTH + 1)},
            f"property 'user_id' is longer than {TEXT_VALUE_MAX_LENGTH} characters",
        ),
    ],
)
def test_an_unreadable_value_is_refused(
    code: str, properties: dict[str, Any], expected: str
) -> None:
    assert reason(accept_event(event(code, **properties), CONTEXT, JAN, FEB)).startswith(expected)
