"""Loading a catalog, and reading subscriptions with their billing context.

A catalog is parsed and checked completely (:mod:`billing.catalog`) before anything is
written, then written in one unit of work: a broken catalog writes nothing. Loading is
an idempotent upsert, so the same file can be loaded on every deploy. Webhook secrets
named by ``secret_env`` are read from this process's environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine

from billing.catalog import CatalogReport, check_catalog, parse_catalog, references
from billing.errors import InvalidCatalog
from billing.models import BillingContext, Subscription
from services.coupons import apply_coupon_in, top_up_wallet_in
from store.unit_of_work import UnitOfWork

__all__ = [
    "CatalogReport",
    "billing_contexts",
    "get_billing_context",
    "list_subscriptions",
    "load_catalog",
    "load_catalog_file",
]

_CONTEXTS_PER_STATEMENT = 500


def load_catalog(engine: Engine, data: Mapping[str, Any]) -> CatalogReport:
    """Validate ``data`` and upsert it in one transaction; raises :class:`InvalidCatalog`."""
    catalog = parse_catalog(data)
    environ = dict(os.environ)
    with UnitOfWork(engine) as uow:
        check_catalog(catalog, uow.catalog.stored(references(catalog)), environ)
        uow.catalog.save(
            catalog,
            {e.code: e.resolve_secret(environ) for e in catalog.webhook_endpoints},
        )
        for wallet in catalog.wallets:
            top_up_wallet_in(
                uow,
                wallet.customer_external_id,
                wallet.initial_balance_cents,
                f"catalog/{wallet.customer_external_id}/initial",
            )
        for applied in catalog.applied_coupons:
            apply_coupon_in(
                uow,
                customer_external_id=applied.customer_external_id,
                coupon_code=applied.coupon_code,
                applied_coupon_id=applied.id,
                amount_cents=applied.amount_cents,
                percentage_rate=applied.percentage_rate,
            )
        uow.commit()
    return catalog.report()


def load_catalog_file(engine: Engine, path: str | os.PathLike[str]) -> CatalogReport:
    """Load a YAML catalog file (see ``examples/catalog.yaml``)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise InvalidCatalog(f"{path}: not valid YAML: {error}") from error
    return load_catalog(engine, data or {})


def get_billing_context(engine: Engine, subscription_external_id: str) -> BillingContext:
    """The subscription with its customer, billing entity, plan and metrics."""
    with UnitOfWork(engine) as uow:
        return uow.catalog.billing_context(subscription_external_id)


def billing_contexts(
    engine: Engine, subscription_external_ids: Iterable[str]
) -> dict[str, BillingContext]:
    """The billing contexts of these subscriptions, unknown ones left out: one statement
    per 500 subscriptions (a bulk start or a usage import handles many at once)."""
    wanted = sorted(set(subscription_external_ids))
    found: dict[str, BillingContext] = {}
    with UnitOfWork(engine) as uow:
        for i in range(0, len(wanted), _CONTEXTS_PER_STATEMENT):
            found.update(uow.catalog.billing_contexts(wanted[i : i + _CONTEXTS_PER_STATEMENT]))
    return found


def list_subscriptions(engine: Engine) -> list[Subscription]:
    """All subscriptions, by external id (what ``period start-all`` launches)."""
    with UnitOfWork(engine) as uow:
        return uow.catalog.list_subscriptions()
