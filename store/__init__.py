"""Persistence of the billing domain: SQLAlchemy 2 schema, repositories, Alembic migrations.

:class:`store.unit_of_work.UnitOfWork` opens one transaction with a repository per
aggregate, each returning domain models (never rows): :mod:`store.catalog` (catalog),
:mod:`store.coupons` (applied coupons and wallets), :mod:`store.usage` (accepted events
and their aggregation), :mod:`store.rejections` (refused events and inputs),
:mod:`store.invoices` (invoices, fees, adjustments, numbering) and :mod:`store.webhooks`
(outbox and delivery log). :mod:`store.db` builds engines and runs the migrations of
``store/migrations``. The order of a use case's steps lives in :mod:`services`.
"""
