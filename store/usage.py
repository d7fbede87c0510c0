"""The usage repository: accepted events stored exactly once, and their aggregation.

Accepted events are kept in ``usage_events``, unique on (subscription, transaction_id):
the first copy wins. Whether an event is accepted is decided before, by
:func:`billing.usage.accept_event`; refused ones go to :mod:`store.rejections`.

The metric's value is extracted once, at insert (``number_value`` for numeric
aggregations, ``text_value`` for ``unique_count``), so :meth:`UsageRepository.charge_usage`
lets the database aggregate over the (subscription, code, timestamp) index instead of
loading events. Only ``weighted_sum`` metrics and ``percentage`` charges fetch per-event
values.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg.errors import UniqueViolation
from pydantic_core import to_json, to_jsonable_python
from sqlalchemy import Select, and_, bindparam, delete, func, or_, select
from sqlalchemy.orm import Session

from billing.aggregations import latest_value
from billing.models import (
    AggregationType,
    BillingContext,
    ChargeModel,
    ChargeUsage,
    RejectedEvent,
    UsageReceipt,
)
from billing.pricing import aggregate
from billing.usage import AcceptedEvent
from store._rows import dialect_insert, insert_or_skip, table_of, utcnow
from store.schema import UsageEventRow, UsageReceiptRow

__all__ = ["UNOWNED_RECEIPT_AGE", "UsageRepository"]

EVENT_VALUE_CHARGE_MODELS = frozenset({ChargeModel.PERCENTAGE})


# PostgreSQL: a batch of new events is COPYed straight into ``usage_events`` (COPY is
# PostgreSQL's fastest way in), inside a savepoint. COPY cannot skip known transaction
# ids: when the batch holds one, the unique constraint fails the COPY, the savepoint is
# rolled back and the batch goes the deduplicating way: COPY into a session-local staging
# table, then one INSERT ... SELECT ... ON CONFLICT DO NOTHING. New usage (the common
# case) is written once; a replayed batch costs a failed COPY more.
_EVENT_COLUMNS = (
    'subscription_external_id, transaction_id, code, "timestamp", properties, '
    "number_value, text_value"
)
_COPY_EVENTS = f"COPY usage_events ({_EVENT_COLUMNS}) FROM STDIN"
# ``ON COMMIT DELETE ROWS``: the table lives as long as the pooled connection, empty
# between transactions.
_CREATE_STAGING = """
    CREATE TEMPORARY TABLE IF NOT EXISTS usage_events_staging (
        position integer NOT NULL,
        subscription_external_id text NOT NULL,
        transaction_id text NOT NULL,
        code text NOT NULL,
        "timestamp" timestamptz NOT NULL,
        properties jsonb NOT NULL,
        number_value numeric,
        text_value text
    ) ON COMMIT DELETE ROWS
"""
_COPY_STAGING = f"COPY usage_events_staging (position, {_EVENT_COLUMNS}) FROM STDIN"
# One statement empties the staging table (the transaction may stage another batch) and
# moves its rows; ORDER BY position: ids follow the batch order (``latest`` breaks
# timestamp ties by id).
_INSERT_STAGED = f"""
    WITH staged AS (DELETE FROM usage_events_staging RETURNING *)
    INSERT INTO usage_events ({_EVENT_COLUMNS})
    SELECT {_EVENT_COLUMNS}
    FROM staged
    ORDER BY position
    ON CONFLICT (subscription_external_id, transaction_id) DO NOTHING
"""


def _copy_events(session: Session, rows: Sequence[tuple[Any, ...]]) -> int:
    """COPY ``rows`` (``_EVENT_COLUMNS``) in; returns how many were new."""
    # The driver's own connection, inside the session's transaction.
    driver = session.connection().connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        cursor.execute("SAVEPOINT usage_copy")
        try:
            with cursor.copy(_COPY_EVENTS) as copy:
                for row in rows:
                    copy.write_row(row)
        except UniqueViolation:  # a known transaction id
            cursor.execute("ROLLBACK TO SAVEPOINT usage_copy")
        else:
            return len(rows)  # the savepoint ends with the transaction
        cursor.execute(_CREATE_STAGING)
        with cursor.copy(_COPY_STAGING) as copy:
            for position, row in enumerate(rows):
                copy.write_row((position, *row))
        cursor.execute(_INSERT_STAGED)
        return int(cursor.rowcount)


def _insert_events(
    session: Session, subscription_external_id: str, accepted: Sequence[AcceptedEvent]
) -> int:
    """Insert new events; copies of known transaction ids are skipped by the database.

    Within ``accepted`` transaction ids are unique (the service keeps the first copy).
    """
    if not accepted:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        return _copy_events(
            session,
            [
                (
                    subscription_external_id,
                    item.event.transaction_id,
                    item.event.code,
                    item.event.timestamp,
                    to_json(item.event.properties).decode(),
                    item.number_value,
                    item.text_value,
                )
                for item in accepted
            ],
        )
    rows = [
        {
            "subscription_external_id": subscription_external_id,
            "transaction_id": item.event.transaction_id,
            "code": item.event.code,
            "timestamp": item.event.timestamp,
            "properties": to_jsonable_python(item.event.properties),
            "number_value": item.number_value,
            "text_value": item.text_value,
        }
        for item in accepted
    ]
    statement = (
        dialect_insert(session, UsageEventRow)
        .on_conflict_do_nothing(index_elements=["subscription_external_id", "transaction_id"])
        .returning(UsageEventRow.__table__.c.id)
    )
    # Core execution (not ORM bulk) keeps large batches fast; column types still apply.
    return len(session.connection().execute(statement, rows).all())


# Core columns (no ORM compile step); the period (subscription, bounds) is bound per call.
_EVENTS = table_of(UsageEventRow)
_RECEIPTS = table_of(UsageReceiptRow)
# How long a receipt without a period (written before migration 0005) is kept. A step runs
# again only while its first run is unanswered: a lost workflow task is retried within
# seconds, a regular activity after its 60 s timeout plus at most 30 s of backoff. A week
# covers any outage of the workers short of a disaster; past it, the only cost of a
# missing receipt is that the step answers "all duplicates" (its events are stored once).
UNOWNED_RECEIPT_AGE = timedelta(days=7)
_IN_PERIOD = (
    _EVENTS.c.subscription_external_id == bindparam("subscription"),
    _EVENTS.c.timestamp >= bindparam("period_start", type_=_EVENTS.c.timestamp.type),
    _EVENTS.c.timestamp < bindparam("period_end", type_=_EVENTS.c.timestamp.type),
)
_Codes = tuple[str, ...]


@functools.lru_cache(maxsize=256)
def _grouped_statement(sqlite: bool, codes: _Codes, sum_codes: _Codes, max_codes: _Codes) -> Any:
    """:func:`_grouped`'s statement for a plan's metrics, built once (every draft and
    finalization runs it); the period's values are bound per call (``_IN_PERIOD``)."""
    column = _EVENTS.c.number_value
    total = (func.decimal_sum(column) if sqlite else func.sum(column)).filter(
        _EVENTS.c.code.in_(sum_codes or [""])
    )
    highest = (func.decimal_max(column) if sqlite else func.max(column)).filter(
        _EVENTS.c.code.in_(max_codes or [""])
    )
    statement: Select[Any] = (
        select(_EVENTS.c.code, func.count(), total, highest)
        .where(*_IN_PERIOD, _EVENTS.c.code.in_(codes))
        .group_by(_EVENTS.c.code)
    )
    return statement


def _grouped(
    session: Session,
    by_type: dict[AggregationType, list[str]],
    period: dict[str, Any],
) -> dict[str, tuple[Decimal, int]]:
    """``{code: (aggregate, events_count)}`` of the count, sum, max and latest metrics
    (latest: the count only), computed by the database in one GROUP BY.

    Each aggregate is FILTERed to its own metrics' rows (SQLite's exact decimal
    aggregates run in Python: no call for rows they would ignore).
    """
    numeric = [AggregationType.COUNT, AggregationType.SUM, AggregationType.MAX]
    codes = [code for kind in (*numeric, AggregationType.LATEST) for code in by_type.get(kind, [])]
    if not codes:
        return {}
    statement = _grouped_statement(
        session.get_bind().dialect.name == "sqlite",
        tuple(codes),
        tuple(by_type.get(AggregationType.SUM, [])),
        tuple(by_type.get(AggregationType.MAX, [])),
    )
    aggregation = {code: kind for kind, kind_codes in by_type.items() for code in kind_codes}
    found: dict[str, tuple[Decimal, int]] = {}
    for code, count, summed, maximum in session.execute(statement, period):
        kind = aggregation[code]
        value = summed if kind == AggregationType.SUM else maximum
        if kind in (AggregationType.COUNT, AggregationType.LATEST):
            value = count
        found[code] = (Decimal(str(value)) if value is not None else Decimal(0), int(count))
    return found


def _unique_counts(
    session: Session, codes: Sequence[str], period: dict[str, Any]
) -> dict[str, tuple[Decimal, int]]:
    """``{code: (distinct values, events_count)}``: apart from :func:`_grouped`, whose
    scan stays on the (subscription, code, timestamp) index without reading the rows."""
    statement = (
        select(_EVENTS.c.code, func.count(func.distinct(_EVENTS.c.text_value)), func.count())
        .where(*_IN_PERIOD, _EVENTS.c.code.in_(list(codes)))
        .group_by(_EVENTS.c.code)
    )
    return {
        code: (Decimal(str(value)), int(count))
        for code, value, count in session.execute(statement, period)
    }


def _latest(session: Session, code: str, period: dict[str, Any]) -> Decimal:
    value = session.scalar(
        select(_EVENTS.c.number_value)
        .where(*_IN_PERIOD, _EVENTS.c.code == code)
        .order_by(_EVENTS.c.timestamp.desc(), _EVENTS.c.id.desc())
        .limit(1),
        period,
    )
    return latest_value(value)


def _event_values(
    session: Session, code: str, period: dict[str, Any]
) -> list[tuple[datetime, Decimal]]:
    rows = session.execute(
        select(_EVENTS.c.timestamp, _EVENTS.c.number_value)
        .where(*_IN_PERIOD, _EVENTS.c.code == code)
        .order_by(_EVENTS.c.timestamp, _EVENTS.c.id),
        period,
    )
    return [(at, value) for at, value in rows if value is not None]


def _charge_usage(
    session: Session, context: BillingContext, period_start: datetime, period_end: datetime
) -> dict[str, ChargeUsage]:
    period = {
        "subscription": context.subscription.external_id,
        "period_start": period_start,
        "period_end": period_end,
    }
    metrics = [context.metrics[code] for code in sorted(context.metrics)]
    by_type: dict[AggregationType, list[str]] = {}
    for metric in metrics:
        by_type.setdefault(metric.aggregation_type, []).append(metric.code)

    units = _grouped(session, by_type, period)
    if AggregationType.UNIQUE_COUNT in by_type:
        units.update(_unique_counts(session, by_type[AggregationType.UNIQUE_COUNT], period))
    for code in by_type.get(AggregationType.LATEST, []):
        if code in units:
            units[code] = (_latest(session, code, period), units[code][1])

    values_needed = {
        charge.billable_metric_code
        for charge in context.plan.charges
        if charge.charge_model in EVENT_VALUE_CHARGE_MODELS
    } | set(by_type.get(AggregationType.WEIGHTED_SUM, []))
    values: dict[str, list[tuple[datetime, Decimal]]] = {
        code: _event_values(session, code, period) for code in sorted(values_needed)
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


class UsageRepository:
    """Usage events inside one unit of work."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def known_transaction_ids(
        self, subscription_external_id: str, transaction_ids: Sequence[str]
    ) -> set[str]:
        """Which of ``transaction_ids`` the subscription has already accepted."""
        if not transaction_ids:
            return set()
        found = self._session.scalars(
            select(_EVENTS.c.transaction_id).where(
                _EVENTS.c.subscription_external_id == subscription_external_id,
                _EVENTS.c.transaction_id.in_(transaction_ids),
            )
        )
        return set(found)

    def receipt(self, key: str) -> UsageReceipt | None:
        """The receipt a recording step stored under ``key``, if it ran before."""
        row = self._session.get(UsageReceiptRow, key)
        if row is None:
            return None
        return UsageReceipt(
            accepted=row.accepted,
            duplicates=row.duplicates,
            rejected=[RejectedEvent.model_validate(item) for item in row.rejected],
        )

    def keep_receipt(
        self,
        key: str,
        receipt: UsageReceipt,
        subscription_external_id: str,
        period_start: datetime,
    ) -> bool:
        """Store what a recording step did, under its idempotency key, with its period.

        False when the key is already stored: the same step ran at the same time on
        another worker and committed first (PostgreSQL waits for that commit).
        """
        stored = self._session.execute(
            insert_or_skip(self._session, UsageReceiptRow, ("key",)).returning(_RECEIPTS.c.key),
            {
                "key": key,
                "accepted": receipt.accepted,
                "duplicates": receipt.duplicates,
                "rejected": [item.model_dump() for item in receipt.rejected],
                "created_at": utcnow(),
                "subscription_external_id": subscription_external_id,
                "period_start": period_start,
            },
        )
        return stored.first() is not None

    def forget_receipts(self, subscription_external_id: str, period_start: datetime) -> None:
        """Delete the period's receipts (it is finalized or closed: no step of it runs
        again), and the receipts without a period older than ``UNOWNED_RECEIPT_AGE``.

        One statement; ``SKIP LOCKED``: finalizations running at once do not wait on
        each other for the rows without a period (one of them deletes each).
        """
        cutoff = utcnow() - UNOWNED_RECEIPT_AGE
        doomed = (
            select(_RECEIPTS.c.key)
            .where(
                or_(
                    and_(
                        _RECEIPTS.c.subscription_external_id == subscription_external_id,
                        _RECEIPTS.c.period_start == period_start,
                    ),
                    and_(
                        _RECEIPTS.c.subscription_external_id.is_(None),
                        _RECEIPTS.c.created_at < cutoff,
                    ),
                )
            )
            .with_for_update(skip_locked=True)
        )
        self._session.execute(delete(_RECEIPTS).where(_RECEIPTS.c.key.in_(doomed)))

    def add(self, subscription_external_id: str, accepted: Sequence[AcceptedEvent]) -> int:
        """Insert accepted events; returns how many were new (copies are skipped)."""
        return _insert_events(self._session, subscription_external_id, accepted)

    def charge_usage(
        self, context: BillingContext, period_start: datetime, period_end: datetime
    ) -> dict[str, ChargeUsage]:
        """Usage of every charge of the plan over ``[period_start, period_end)``."""
        return _charge_usage(self._session, context, period_start, period_end)
