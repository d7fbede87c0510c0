"""Usage events: exactly-once ingestion and SQL aggregation of a period's usage.

Every event is kept: accepted ones in ``usage_events`` (deduplicated on
(subscription, transaction_id), the first copy wins), refused ones in
``rejected_events`` with a reason a sender and an operator can read. A rejection does
not consume the transaction id: a corrected copy sent later is accepted.

The metric's value is extracted once, at insert (``number_value`` for numeric
aggregations, ``text_value`` for ``unique_count``), so :func:`period_usage` can let the
database aggregate over the (subscription, code, timestamp) index instead of loading
events. Only ``weighted_sum`` metrics and ``percentage`` charges fetch per-event values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import ColumnElement, Engine, Select, func, select, text
from sqlalchemy.orm import Session

from billing.aggregations import to_decimal
from billing.errors import InvalidEventValue
from billing.models import AggregationType, BillableMetric, ChargeModel, ChargeUsage, UsageEvent
from billing.periods import billing_period, describe_period
from billing.pricing import aggregate
from store._rows import BillingContext, dialect_insert, load_context, transaction, utcnow
from store.schema import RejectedEventRow, RejectedInputRow, UsageEventRow

__all__ = [
    "IngestResult",
    "RejectedEvent",
    "Rejection",
    "list_rejections",
    "period_usage",
    "record_rejected_input",
    "record_usage",
]

TEXT_VALUE_MAX_LENGTH = 500
NUMERIC_AGGREGATIONS = frozenset(
    {
        AggregationType.SUM,
        AggregationType.MAX,
        AggregationType.LATEST,
        AggregationType.WEIGHTED_SUM,
    }
)
EVENT_VALUE_CHARGE_MODELS = frozenset({ChargeModel.PERCENTAGE})


class RejectedEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    transaction_id: str
    code: str
    timestamp: datetime
    reason: str


class IngestResult(BaseModel):
    """What one batch did: new events, copies of known ones, and refused ones."""

    model_config = ConfigDict(frozen=True)

    accepted: int = 0
    duplicates: int = 0
    rejected: list[RejectedEvent] = []


class Rejection(BaseModel):
    """Anything refused (an event, a fee edit, a late signal), for operators."""

    model_config = ConfigDict(frozen=True)

    key: str
    source: str
    kind: str
    subscription_external_id: str | None
    payload: str
    reason: str
    created_at: datetime


def _utc_label(timestamp: datetime) -> str:
    return timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _extract(
    event: UsageEvent, metric: BillableMetric
) -> tuple[Decimal | None, str | None, str | None]:
    """The event's ``(number_value, text_value, rejection reason)`` for ``metric``."""
    if metric.aggregation_type == AggregationType.COUNT:
        return None, None, None
    field = metric.field_name
    assert field is not None  # BillableMetric requires it
    value: Any = event.properties.get(field)
    if value is None:
        return (
            None,
            None,
            (
                f"missing property {field!r}: metric {metric.code!r} "
                f"({metric.aggregation_type.value}) reads it"
            ),
        )
    if metric.aggregation_type == AggregationType.UNIQUE_COUNT:
        text = str(value)
        if len(text) > TEXT_VALUE_MAX_LENGTH:
            return (
                None,
                None,
                f"property {field!r} is longer than {TEXT_VALUE_MAX_LENGTH} characters",
            )
        return None, text, None
    try:
        number = to_decimal(value)
    except InvalidEventValue:
        return (
            None,
            None,
            (
                f"property {field!r} = {value!r} is not a number: metric {metric.code!r} "
                f"aggregates it by {metric.aggregation_type.value}"
            ),
        )
    return number, None, None


def _rejection_reason(
    event: UsageEvent,
    context: BillingContext,
    period_start: datetime,
    period_end: datetime,
) -> tuple[str | None, Decimal | None, str | None]:
    subscription = context.subscription.external_id
    if event.external_subscription_id != subscription:
        return (
            f"event for subscription {event.external_subscription_id!r} "
            f"was sent to subscription {subscription!r}",
            None,
            None,
        )
    metric = context.metrics.get(event.code)
    if metric is None:
        known = ", ".join(sorted(context.metrics)) or "none"
        return (
            f"unknown metric code {event.code!r} for plan {context.plan.code!r} "
            f"(its metrics: {known})",
            None,
            None,
        )
    if not period_start <= event.timestamp < period_end:
        this = describe_period(period_start, period_end, context.timezone)
        try:
            start, end = billing_period(event.timestamp, context.timezone, context.plan.interval)
        except (ValueError, OverflowError):  # e.g. December 9999: its period ends past year 9999
            belongs = "it is too far from any billing period to be billed"
        else:
            belongs = f"it belongs to the period {describe_period(start, end, context.timezone)}"
        return (
            f"timestamp {_utc_label(event.timestamp)} is outside the period {this}; {belongs}",
            None,
            None,
        )
    number, text, reason = _extract(event, metric)
    return reason, number, text


def record_usage(
    engine: Engine,
    subscription_external_id: str,
    period_start: datetime,
    period_end: datetime,
    events: Sequence[UsageEvent],
) -> IngestResult:
    """Record a batch of events of one subscription's period, exactly once each."""
    with transaction(engine) as session:
        context = load_context(session, subscription_external_id)
        first_copies: dict[str, UsageEvent] = {}
        duplicates = 0
        rows: list[dict[str, Any]] = []
        rejected: list[RejectedEvent] = []
        rejected_rows: list[dict[str, Any]] = []
        now = utcnow()
        for event in events:
            if event.transaction_id in first_copies:
                duplicates += 1  # a copy within the batch: the first one wins
                continue
            first_copies[event.transaction_id] = event
            reason, number, text = _rejection_reason(event, context, period_start, period_end)
            if reason is None:
                rows.append(
                    {
                        "subscription_external_id": subscription_external_id,
                        "transaction_id": event.transaction_id,
                        "code": event.code,
                        "timestamp": event.timestamp,
                        "properties": event.model_dump(mode="json")["properties"],
                        "number_value": number,
                        "text_value": text,
                    }
                )
                continue
            rejected.append(
                RejectedEvent(
                    transaction_id=event.transaction_id,
                    code=event.code,
                    timestamp=event.timestamp,
                    reason=reason,
                )
            )
        # A refused copy of an event accepted earlier is just a duplicate.
        known = _accepted_ids(
            session, subscription_external_id, [r.transaction_id for r in rejected]
        )
        if known:
            duplicates += sum(1 for r in rejected if r.transaction_id in known)
            rejected = [r for r in rejected if r.transaction_id not in known]
        for refused in rejected:
            event_properties = first_copies[refused.transaction_id].model_dump(mode="json")[
                "properties"
            ]
            rejected_rows.append(
                {
                    "subscription_external_id": subscription_external_id,
                    "transaction_id": refused.transaction_id,
                    "code": refused.code,
                    "timestamp": refused.timestamp,
                    "properties": event_properties,
                    "reason": refused.reason,
                    "created_at": now,
                }
            )
        accepted = _insert_events(session, rows)
        if rejected_rows:
            session.execute(
                dialect_insert(session, RejectedEventRow).on_conflict_do_nothing(
                    index_elements=["subscription_external_id", "transaction_id"]
                ),
                rejected_rows,
            )
        return IngestResult(
            accepted=accepted,
            duplicates=duplicates + len(rows) - accepted,
            rejected=rejected,
        )


def _accepted_ids(session: Session, subscription_external_id: str, ids: Sequence[str]) -> set[str]:
    if not ids:
        return set()
    found = session.scalars(
        select(UsageEventRow.transaction_id).where(
            UsageEventRow.subscription_external_id == subscription_external_id,
            UsageEventRow.transaction_id.in_(ids),
        )
    )
    return set(found)


_POSTGRES_BULK_INSERT = text(
    """
    INSERT INTO usage_events (subscription_external_id, transaction_id, code, "timestamp",
                              properties, number_value, text_value)
    SELECT batch.subscription_external_id, batch.transaction_id, batch.code, batch.at,
           batch.properties::jsonb, batch.number_value, batch.text_value
    FROM unnest(
        CAST(:subscription_external_ids AS text[]),
        CAST(:transaction_ids AS text[]),
        CAST(:codes AS text[]),
        CAST(:timestamps AS timestamptz[]),
        CAST(:properties AS text[]),
        CAST(:number_values AS numeric[]),
        CAST(:text_values AS text[])
    ) WITH ORDINALITY AS batch(subscription_external_id, transaction_id, code, at, properties,
                               number_value, text_value, position)
    ORDER BY batch.position
    ON CONFLICT (subscription_external_id, transaction_id) DO NOTHING
    RETURNING id
    """
)


def _insert_events(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert new events; copies of known transaction ids are skipped by the database.

    PostgreSQL gets the whole batch as one array per column (``unnest``): one short
    statement instead of thousands of placeholders, several times faster.
    """
    if not rows:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        result = session.execute(
            _POSTGRES_BULK_INSERT,
            {
                "subscription_external_ids": [row["subscription_external_id"] for row in rows],
                "transaction_ids": [row["transaction_id"] for row in rows],
                "codes": [row["code"] for row in rows],
                "timestamps": [row["timestamp"].astimezone(UTC) for row in rows],
                "properties": [json.dumps(row["properties"]) for row in rows],
                "number_values": [row["number_value"] for row in rows],
                "text_values": [row["text_value"] for row in rows],
            },
        )
        return len(result.all())
    statement = (
        dialect_insert(session, UsageEventRow)
        .on_conflict_do_nothing(index_elements=["subscription_external_id", "transaction_id"])
        .returning(UsageEventRow.__table__.c.id)
    )
    # Core execution (not ORM bulk) keeps large batches fast; column types still apply.
    return len(session.connection().execute(statement, list(rows)).all())


# --------------------------------------------------------------------------- aggregation


def _in_period(
    subscription_external_id: str, period_start: datetime, period_end: datetime
) -> list[ColumnElement[bool]]:
    return [
        UsageEventRow.subscription_external_id == subscription_external_id,
        UsageEventRow.timestamp >= period_start,
        UsageEventRow.timestamp < period_end,
    ]


def _aggregate_column(session: Session, aggregation: AggregationType) -> ColumnElement[Any]:
    sqlite = session.get_bind().dialect.name == "sqlite"
    if aggregation == AggregationType.SUM:
        return (
            func.decimal_sum(UsageEventRow.number_value)
            if sqlite
            else func.sum(UsageEventRow.number_value)
        )
    if aggregation == AggregationType.MAX:
        return (
            func.decimal_max(UsageEventRow.number_value)
            if sqlite
            else func.max(UsageEventRow.number_value)
        )
    if aggregation == AggregationType.UNIQUE_COUNT:
        return func.count(func.distinct(UsageEventRow.text_value))
    return func.count()


def _grouped(
    session: Session,
    aggregation: AggregationType,
    codes: Iterable[str],
    where: list[ColumnElement[bool]],
) -> dict[str, tuple[Decimal, int]]:
    """``{code: (aggregate, events_count)}`` computed by the database, one GROUP BY."""
    statement: Select[Any] = (
        select(UsageEventRow.code, _aggregate_column(session, aggregation), func.count())
        .where(*where, UsageEventRow.code.in_(list(codes)))
        .group_by(UsageEventRow.code)
    )
    found: dict[str, tuple[Decimal, int]] = {}
    for code, value, count in session.execute(statement):
        found[code] = (Decimal(str(value)) if value is not None else Decimal(0), int(count))
    return found


def _latest(session: Session, code: str, where: list[ColumnElement[bool]]) -> Decimal:
    value = session.scalar(
        select(UsageEventRow.number_value)
        .where(*where, UsageEventRow.code == code)
        .order_by(UsageEventRow.timestamp.desc(), UsageEventRow.id.desc())
        .limit(1)
    )
    return max(value, Decimal(0)) if value is not None else Decimal(0)


def _event_values(
    session: Session, code: str, where: list[ColumnElement[bool]]
) -> list[tuple[datetime, Decimal]]:
    rows = session.execute(
        select(UsageEventRow.timestamp, UsageEventRow.number_value)
        .where(*where, UsageEventRow.code == code)
        .order_by(UsageEventRow.timestamp, UsageEventRow.id)
    )
    return [(at, value) for at, value in rows if value is not None]


def period_usage(
    engine: Engine, context: BillingContext, period_start: datetime, period_end: datetime
) -> dict[str, ChargeUsage]:
    """Usage of every charge of the plan over ``[period_start, period_end)``."""
    with transaction(engine) as session:
        return usage_in(session, context, period_start, period_end)


def usage_in(
    session: Session, context: BillingContext, period_start: datetime, period_end: datetime
) -> dict[str, ChargeUsage]:
    """:func:`period_usage` inside the caller's transaction (used by invoices)."""
    where = _in_period(context.subscription.external_id, period_start, period_end)
    metrics = [context.metrics[code] for code in sorted(context.metrics)]
    by_type: dict[AggregationType, list[str]] = {}
    for metric in metrics:
        by_type.setdefault(metric.aggregation_type, []).append(metric.code)

    units: dict[str, tuple[Decimal, int]] = {}
    for aggregation in (
        AggregationType.COUNT,
        AggregationType.SUM,
        AggregationType.MAX,
        AggregationType.UNIQUE_COUNT,
    ):
        if aggregation in by_type:
            units.update(_grouped(session, aggregation, by_type[aggregation], where))
    for code in by_type.get(AggregationType.LATEST, []):
        counts = _grouped(session, AggregationType.COUNT, [code], where)
        if code in counts:
            units[code] = (_latest(session, code, where), counts[code][1])

    values_needed = {
        charge.billable_metric_code
        for charge in context.plan.charges
        if charge.charge_model in EVENT_VALUE_CHARGE_MODELS
    } | set(by_type.get(AggregationType.WEIGHTED_SUM, []))
    values: dict[str, list[tuple[datetime, Decimal]]] = {
        code: _event_values(session, code, where) for code in sorted(values_needed)
    }
    for code in by_type.get(AggregationType.WEIGHTED_SUM, []):
        events = values[code]
        units[code] = (
            aggregate(AggregationType.WEIGHTED_SUM, events, period_start, period_end),
            len(events),
        )

    usage: dict[str, ChargeUsage] = {}
    for charge in context.plan.charges:
        aggregate_value, count = units.get(charge.billable_metric_code, (Decimal(0), 0))
        usage[charge.code] = ChargeUsage(
            units=aggregate_value,
            events_count=count,
            event_values=tuple(value for _, value in values[charge.billable_metric_code])
            if charge.charge_model in EVENT_VALUE_CHARGE_MODELS
            else (),
        )
    return usage


# --------------------------------------------------------------------------- rejections


def record_rejected_input(
    engine: Engine,
    *,
    key: str,
    source: str,
    kind: str,
    payload: str,
    reason: str,
    subscription_external_id: str | None = None,
) -> None:
    """Keep a refused signal or request for operators; idempotent on ``key``."""
    with transaction(engine) as session:
        session.execute(
            dialect_insert(session, RejectedInputRow).on_conflict_do_nothing(
                index_elements=["key"]
            ),
            [
                {
                    "key": key,
                    "source": source,
                    "kind": kind,
                    "subscription_external_id": subscription_external_id,
                    "payload": payload,
                    "reason": reason,
                    "created_at": utcnow(),
                }
            ],
        )


def list_rejections(
    engine: Engine, *, subscription_external_id: str | None = None, source: str | None = None
) -> list[Rejection]:
    """Refused inputs and refused events, oldest first.

    Refused events appear with ``source="usage"``, ``kind="usage_event"`` and the key
    ``event/<subscription>/<transaction id>``.
    """
    with transaction(engine) as session:
        rejections: list[Rejection] = []
        inputs = select(RejectedInputRow)
        if subscription_external_id is not None:
            inputs = inputs.where(
                RejectedInputRow.subscription_external_id == subscription_external_id
            )
        if source is not None:
            inputs = inputs.where(RejectedInputRow.source == source)
        for row in session.scalars(inputs):
            rejections.append(
                Rejection(
                    key=row.key,
                    source=row.source,
                    kind=row.kind,
                    subscription_external_id=row.subscription_external_id,
                    payload=row.payload,
                    reason=row.reason,
                    created_at=row.created_at,
                )
            )
        if source in (None, "usage"):
            events = select(RejectedEventRow)
            if subscription_external_id is not None:
                events = events.where(
                    RejectedEventRow.subscription_external_id == subscription_external_id
                )
            for event in session.scalars(events):
                payload = UsageEvent(
                    transaction_id=event.transaction_id,
                    external_subscription_id=event.subscription_external_id,
                    code=event.code,
                    timestamp=event.timestamp,
                    properties=event.properties,
                )
                rejections.append(
                    Rejection(
                        key=f"event/{event.subscription_external_id}/{event.transaction_id}",
                        source="usage",
                        kind="usage_event",
                        subscription_external_id=event.subscription_external_id,
                        payload=payload.model_dump_json(),
                        reason=event.reason,
                        created_at=event.created_at,
                    )
                )
        rejections.sort(key=lambda rejection: (rejection.created_at, rejection.key))
        return rejections
