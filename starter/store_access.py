"""The operations of :class:`starter.client.BillingClient` that need no Temporal connection.

Every service call the client makes is here: the subscription's billing context, the
invoices (a period's, or a list), catalog loads, coupons, wallet top-ups and the webhook log. They need
no Temporal connection (``BillingClient(None, engine, ...)`` serves them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy

from billing.errors import InvalidCatalog, NotFound
from billing.models import (
    AppliedCoupon,
    BillingContext,
    DeliveryStatus,
    Invoice,
    InvoiceStatus,
    Subscription,
    Wallet,
)
from services import catalog as catalog_service
from services import coupons as coupon_service
from services import invoices as invoice_service
from services import webhooks as delivery_log
from services.catalog import CatalogReport
from services.webhooks import WebhookDelivery
from starter.errors import InvalidRequest, Refused, UnknownSubscription

__all__ = ["StoreAccess"]


class StoreAccess:
    """The store-only operations, through :mod:`services`, with the errors of :mod:`starter.errors`."""

    def __init__(self, engine: sqlalchemy.Engine) -> None:
        self.engine = engine
        self._contexts: dict[str, BillingContext] = {}

    def context(self, subscription_external_id: str) -> BillingContext:
        """The subscription's billing context (cached for this client)."""
        cached = self._contexts.get(subscription_external_id)
        if cached is not None:
            return cached
        try:
            context = catalog_service.get_billing_context(self.engine, subscription_external_id)
        except NotFound:
            raise UnknownSubscription(subscription_external_id) from None
        self._contexts[subscription_external_id] = context
        return context

    def load_contexts(self, subscription_external_ids: Iterable[str]) -> None:
        """Cache the billing contexts of many subscriptions in one read (a bulk command
        needs them all); an unknown one is left for :meth:`context` to report."""
        missing = {key for key in subscription_external_ids if key not in self._contexts}
        if missing:
            self._contexts.update(catalog_service.billing_contexts(self.engine, missing))

    def load_catalog(self, source: Path | Mapping[str, Any]) -> CatalogReport:
        """Validate and load a catalog: a YAML file, or its parsed sections.

        Idempotent; nothing is written on error (``InvalidRequest`` says what is wrong).
        """
        try:
            if isinstance(source, Path):
                return catalog_service.load_catalog_file(self.engine, source)
            return catalog_service.load_catalog(self.engine, source)
        except InvalidCatalog as err:
            raise InvalidRequest(
                f"{source}: {err}" if isinstance(source, Path) else str(err)
            ) from None

    def subscriptions(self) -> list[Subscription]:
        """Every subscription, by external id."""
        return catalog_service.list_subscriptions(self.engine)

    async def find_invoice(
        self, subscription_external_id: str, period_start: datetime
    ) -> Invoice | None:
        """The invoice of the subscription's period starting at ``period_start``, if any."""
        return await asyncio.to_thread(
            invoice_service.find_invoice, self.engine, subscription_external_id, period_start
        )

    async def period_statuses(
        self, periods: Iterable[tuple[str, datetime]]
    ) -> dict[tuple[str, datetime], InvoiceStatus]:
        """The invoice status of each (subscription, period start) that has an invoice, in
        one read (what a bulk command checks before sending anything)."""
        return await asyncio.to_thread(invoice_service.period_statuses, self.engine, periods)

    def list_invoices(
        self,
        *,
        customer_external_id: str | None = None,
        subscription_external_id: str | None = None,
        status: InvoiceStatus | str | None = None,
    ) -> list[Invoice]:
        return invoice_service.list_invoices(
            self.engine,
            customer_external_id=customer_external_id,
            subscription_external_id=subscription_external_id,
            status=status,
        )

    # ------------------------------------------------------------------ coupons, wallets

    def apply_coupon(
        self,
        customer_external_id: str,
        coupon_code: str,
        *,
        applied_coupon_id: str,
        amount_cents: int | None = None,
        percentage_rate: Decimal | None = None,
    ) -> AppliedCoupon:
        """Give a coupon to a customer (idempotent on ``applied_coupon_id``).

        It is applied at the customer's next finalization, never to a draft.
        """
        try:
            return coupon_service.apply_coupon(
                self.engine,
                customer_external_id=customer_external_id,
                coupon_code=coupon_code,
                applied_coupon_id=applied_coupon_id,
                amount_cents=amount_cents,
                percentage_rate=percentage_rate,
            )
        except NotFound as err:
            raise Refused(str(err)) from None
        except ValueError as err:
            raise InvalidRequest(str(err)) from None

    def top_up_wallet(
        self, customer_external_id: str, amount_cents: int, *, transaction_id: str
    ) -> Wallet:
        """Add prepaid credits (idempotent on ``transaction_id``)."""
        try:
            return coupon_service.top_up_wallet(
                self.engine,
                customer_external_id=customer_external_id,
                amount_cents=amount_cents,
                transaction_id=transaction_id,
            )
        except NotFound as err:
            raise Refused(str(err)) from None
        except ValueError as err:
            raise InvalidRequest(str(err)) from None

    # ------------------------------------------------------------------ webhooks

    def list_webhooks(
        self, *, status: DeliveryStatus | None = None, invoice_id: str | None = None
    ) -> list[WebhookDelivery]:
        return delivery_log.list_deliveries(self.engine, status=status, invoice_id=invoice_id)
