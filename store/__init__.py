"""Persistence of the billing domain: SQLAlchemy 2 schema, repositories, Alembic migrations.

One module per aggregate, each public function one transaction returning domain models:
:mod:`store.catalog` (catalog, coupons, wallets), :mod:`store.usage` (events and their
aggregation), :mod:`store.invoices` (drafts, adjustments, finalization) and
:mod:`store.webhooks` (outbox and delivery log). :mod:`store.db` builds engines and runs
the migrations of ``store/migrations``.
"""
