"""Coupons and wallets: what a customer brings to the next finalization.

Coupons given and credits added here are used at the customer's next finalization,
never on a draft (see :func:`services.finalization.finalize_invoice`).
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Engine

from billing.coupons import applied_coupon
from billing.models import AppliedCoupon, Wallet
from store.unit_of_work import UnitOfWork

__all__ = ["apply_coupon", "get_wallet", "list_applied_coupons", "top_up_wallet"]


def apply_coupon_in(
    uow: UnitOfWork,
    *,
    customer_external_id: str,
    coupon_code: str,
    applied_coupon_id: str,
    amount_cents: int | None,
    percentage_rate: Decimal | None,
) -> AppliedCoupon:
    """:func:`apply_coupon` inside the caller's unit of work (a catalog load uses it)."""
    existing = uow.coupons.get_applied(applied_coupon_id)
    if existing is not None:
        return existing
    coupon = uow.catalog.get_coupon(coupon_code)
    uow.catalog.require_customer(customer_external_id)
    return uow.coupons.add_applied(
        applied_coupon(
            coupon,
            applied_coupon_id=applied_coupon_id,
            customer_external_id=customer_external_id,
            amount_cents=amount_cents,
            percentage_rate=percentage_rate,
        )
    )


def top_up_wallet_in(
    uow: UnitOfWork, customer_external_id: str, amount_cents: int, transaction_id: str
) -> Wallet:
    """:func:`top_up_wallet` inside the caller's unit of work (a catalog load uses it)."""
    if amount_cents < 0:
        raise ValueError("a top-up cannot be negative")
    uow.catalog.require_customer(customer_external_id)
    return uow.coupons.top_up(customer_external_id, amount_cents, transaction_id)


def apply_coupon(
    engine: Engine,
    *,
    customer_external_id: str,
    coupon_code: str,
    applied_coupon_id: str,
    amount_cents: int | None = None,
    percentage_rate: Decimal | None = None,
) -> AppliedCoupon:
    """Give a coupon to a customer; idempotent on ``applied_coupon_id``.

    ``amount_cents`` / ``percentage_rate`` override the coupon's own value
    (:func:`billing.coupons.apply_coupon`).
    """
    with UnitOfWork(engine) as uow:
        applied = apply_coupon_in(
            uow,
            customer_external_id=customer_external_id,
            coupon_code=coupon_code,
            applied_coupon_id=applied_coupon_id,
            amount_cents=amount_cents,
            percentage_rate=percentage_rate,
        )
        uow.commit()
        return applied


def top_up_wallet(
    engine: Engine, *, customer_external_id: str, amount_cents: int, transaction_id: str
) -> Wallet:
    """Add prepaid credits; idempotent on ``transaction_id`` (a retry adds nothing)."""
    with UnitOfWork(engine) as uow:
        wallet = top_up_wallet_in(uow, customer_external_id, amount_cents, transaction_id)
        uow.commit()
        return wallet


def get_wallet(engine: Engine, customer_external_id: str) -> Wallet:
    """The customer's wallet (balance 0 when none was ever opened)."""
    with UnitOfWork(engine) as uow:
        return uow.coupons.wallet(customer_external_id)


def list_applied_coupons(engine: Engine, customer_external_id: str) -> list[AppliedCoupon]:
    """The customer's applied coupons in the order they were applied."""
    with UnitOfWork(engine) as uow:
        return uow.coupons.list_applied(customer_external_id)
