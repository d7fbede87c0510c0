"""Whether a usage event is accepted into a period, and the value its metric reads.

:func:`accept_event` is the one rule: an event is billed in a period when it was sent to
that subscription, names a metric of the plan, falls inside the period, and carries the
property its metric aggregates in a readable form. Otherwise it is refused with a reason
that a sender and an operator can act on. Duplicates (a transaction id seen before) are
the store's business, not this rule's.

The accepted value is extracted once: ``number_value`` for the numeric aggregations,
``text_value`` for ``unique_count`` (``count`` reads nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from billing.aggregations import to_decimal
from billing.errors import InvalidEventValue
from billing.models import (
    AggregationType,
    BillableMetric,
    BillingContext,
    RejectedEvent,
    UsageEvent,
)
from billing.periods import billing_period, describe_period

__all__ = ["TEXT_VALUE_MAX_LENGTH", "AcceptedEvent", "accept_event"]

TEXT_VALUE_MAX_LENGTH = 500


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    """An event accepted into a period, with the value its metric aggregates.

    A plain dataclass: ``event`` is validated already, and a batch of usage makes one of
    these per event (a pydantic model here cost more than the rule itself).
    """

    event: UsageEvent
    number_value: Decimal | None = None
    text_value: str | None = None


def accept_event(
    event: UsageEvent, context: BillingContext, period_start: datetime, period_end: datetime
) -> AcceptedEvent | RejectedEvent:
    """Accept ``event`` into ``[period_start, period_end)`` of ``context``'s subscription.

    >>> from billing.models import BillingEntity, Customer, Plan, Subscription
    >>> jan, feb = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    >>> context = BillingContext(
    ...     subscription=Subscription(
    ...         external_id="sub", customer_external_id="c", plan_code="p", started_at=jan
    ...     ),
    ...     customer=Customer(external_id="c", billing_entity_code="e"),
    ...     billing_entity=BillingEntity(code="e", name="E", invoice_prefix="E"),
    ...     plan=Plan(code="p"),
    ...     metrics={"calls": BillableMetric(code="calls", aggregation_type="count")},
    ...     timezone="UTC", grace_period_days=0, currency="USD",
    ... )
    >>> ok = UsageEvent(transaction_id="t1", external_subscription_id="sub", code="calls",
    ...                 timestamp=jan)
    >>> type(accept_event(ok, context, jan, feb)).__name__
    'AcceptedEvent'
    >>> late = ok.model_copy(update={"timestamp": feb})
    >>> print(accept_event(late, context, jan, feb).reason)
    timestamp 2026-02-01T00:00:00Z is outside the period 2026-01-01..2026-01-31; it belongs to the period 2026-02-01..2026-02-28
    """
    reason = _refusal(event, context, period_start, period_end)
    if reason is not None:
        return _rejected(event, reason)
    metric = context.metrics[event.code]
    value = _metric_value(event, metric)
    if isinstance(value, str):
        return _rejected(event, value)
    number, text = value
    return AcceptedEvent(event=event, number_value=number, text_value=text)


def _rejected(event: UsageEvent, reason: str) -> RejectedEvent:
    return RejectedEvent(transaction_id=event.transaction_id, code=event.code, reason=reason)


def _utc_label(timestamp: datetime) -> str:
    return timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _refusal(
    event: UsageEvent, context: BillingContext, period_start: datetime, period_end: datetime
) -> str | None:
    """Why the event does not belong to this subscription's period, if it does not."""
    subscription = context.subscription.external_id
    if event.external_subscription_id != subscription:
        return (
            f"event for subscription {event.external_subscription_id!r} "
            f"was sent to subscription {subscription!r}"
        )
    if event.code not in context.metrics:
        known = ", ".join(sorted(context.metrics)) or "none"
        return (
            f"unknown metric code {event.code!r} for plan {context.plan.code!r} "
            f"(its metrics: {known})"
        )
    if not period_start <= event.timestamp < period_end:
        this = describe_period(period_start, period_end, context.timezone)
        try:
            start, end = billing_period(event.timestamp, context.timezone, context.plan.interval)
        except (ValueError, OverflowError):  # e.g. December 9999: its period ends past year 9999
            belongs = "it is too far from any billing period to be billed"
        else:
            belongs = f"it belongs to the period {describe_period(start, end, context.timezone)}"
        return f"timestamp {_utc_label(event.timestamp)} is outside the period {this}; {belongs}"
    return None


def _metric_value(
    event: UsageEvent, metric: BillableMetric
) -> tuple[Decimal | None, str | None] | str:
    """The event's ``(number_value, text_value)`` for ``metric``, or why it has none."""
    if metric.aggregation_type == AggregationType.COUNT:
        return None, None
    field = metric.field_name
    assert field is not None  # BillableMetric requires it
    value: Any = event.properties.get(field)
    if value is None:
        return (
            f"missing property {field!r}: metric {metric.code!r} "
            f"({metric.aggregation_type.value}) reads it"
        )
    if metric.aggregation_type == AggregationType.UNIQUE_COUNT:
        text = str(value)
        if len(text) > TEXT_VALUE_MAX_LENGTH:
            return f"property {field!r} is longer than {TEXT_VALUE_MAX_LENGTH} characters"
        return None, text
    try:
        return to_decimal(value), None
    except InvalidEventValue:
        return (
            f"property {field!r} = {value!r} is not a number: metric {metric.code!r} "
            f"aggregates it by {metric.aggregation_type.value}"
        )
