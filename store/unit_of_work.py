"""The unit of work: one transaction, with a repository per aggregate over its session.

A service opens one, loads and saves through its repositories, and commits; leaving the
block without :meth:`UnitOfWork.commit` rolls everything back::

    with UnitOfWork(engine) as uow:
        invoice = uow.invoices.lock(invoice_id)
        ...
        uow.commit()

Every transaction starts with the write lock on SQLite (``BEGIN IMMEDIATE``, see
:mod:`store.db`); PostgreSQL relies on the row locks the repositories take.
"""

from __future__ import annotations

from types import TracebackType

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from store.catalog import CatalogRepository
from store.coupons import CouponRepository
from store.invoices import InvoiceRepository
from store.rejections import RejectionRepository
from store.timeline import TimelineRepository
from store.usage import UsageRepository
from store.webhooks import WebhookRepository

__all__ = ["UnitOfWork"]


class UnitOfWork:
    """One transaction over ``engine``; the repositories exist inside the ``with`` block."""

    catalog: CatalogRepository
    coupons: CouponRepository
    invoices: InvoiceRepository
    rejections: RejectionRepository
    timeline: TimelineRepository
    usage: UsageRepository
    webhooks: WebhookRepository

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def __enter__(self) -> UnitOfWork:
        self._session = Session(self._engine, expire_on_commit=False)
        self._session.begin()
        self.catalog = CatalogRepository(self._session)
        self.coupons = CouponRepository(self._session)
        self.invoices = InvoiceRepository(self._session)
        self.rejections = RejectionRepository(self._session)
        self.timeline = TimelineRepository(self._session)
        self.usage = UsageRepository(self._session)
        self.webhooks = WebhookRepository(self._session)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self._session.rollback()  # nothing left to undo after a commit
        finally:
            self._session.close()

    def commit(self) -> None:
        """Make the block's writes durable."""
        self._session.commit()

    def rollback(self) -> None:
        """Undo the block's writes."""
        self._session.rollback()
