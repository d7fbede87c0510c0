"""Column types that behave the same on SQLite and PostgreSQL.

- :class:`UTCDateTime`: timezone-aware UTC in Python. PostgreSQL keeps ``timestamptz``;
  SQLite has no timezone support, so values are stored as naive UTC (which sorts and
  compares correctly as text) and come back as aware UTC datetimes.
- :class:`ExactDecimal`: ``Decimal`` without float rounding. PostgreSQL keeps an
  unbounded ``NUMERIC``; SQLite would coerce ``NUMERIC`` to a float, so the value is kept
  as decimal text and aggregated by the exact ``decimal_sum`` / ``decimal_max`` functions
  that :func:`store.db.make_engine` registers on every SQLite connection.

Migrations import these types, so they must stay backwards compatible.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Dialect, Numeric, String
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["ExactDecimal", "UTCDateTime", "decimal_text"]


def decimal_text(value: Decimal) -> str:
    """Plain (non-scientific) decimal text, e.g. ``Decimal('1E+2')`` -> ``'100'``."""
    return format(value, "f")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both dialects; naive values are refused on the way in."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware UTC datetime")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class ExactDecimal(TypeDecorator[Decimal]):
    """Exact decimals: ``NUMERIC`` on PostgreSQL, decimal text on SQLite."""

    impl = Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(64))
        return dialect.type_descriptor(Numeric(asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        number = value if isinstance(value, Decimal) else Decimal(str(value))
        return decimal_text(number) if dialect.name == "sqlite" else number

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))
