"""The coupons and wallets repository: what a customer brings to a finalization.

Applied coupons are kept in the order they were applied (the order finalization uses
them in); wallets hold prepaid credits, every movement a wallet transaction whose id is
the caller's idempotency key.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from billing.invoicing import Totals
from billing.models import AppliedCoupon, Wallet
from store._rows import applied_coupon_model, dialect_insert, table_of, utcnow
from store.schema import (
    AppliedCouponRow,
    Base,
    CouponConsumptionRow,
    WalletRow,
    WalletTransactionRow,
)

__all__ = ["CouponRepository"]

_APPLIED = Base.metadata.tables[AppliedCouponRow.__tablename__]
_WALLETS = table_of(WalletRow)
# What every finalization reads (built once, bound per call): the customer's active
# coupons in applied order and the wallet's balance, each also locked until commit.
_ACTIVE = (
    select(_APPLIED)
    .where(
        _APPLIED.c.customer_external_id == bindparam("customer"),
        _APPLIED.c.status == "active",
    )
    .order_by(_APPLIED.c.applied_order, _APPLIED.c.id)
)
_ACTIVE_LOCKED = _ACTIVE.with_for_update()
_BALANCE = select(_WALLETS.c.balance_cents).where(
    _WALLETS.c.customer_external_id == bindparam("customer")
)
_BALANCE_LOCKED = _BALANCE.with_for_update()


class CouponRepository:
    """Applied coupons and wallets inside one unit of work."""

    def __init__(self, session: Session) -> None:
        self._session = session

    # ----------------------------------------------------------------------- coupons

    def get_applied(self, applied_coupon_id: str) -> AppliedCoupon | None:
        row = self._session.execute(
            select(_APPLIED).where(_APPLIED.c.id == applied_coupon_id)
        ).one_or_none()
        return None if row is None else applied_coupon_model(row._mapping)

    def add_applied(self, applied: AppliedCoupon) -> AppliedCoupon:
        """Store ``applied`` after the customer's other coupons; idempotent on its id."""
        order = self._session.scalar(
            select(func.coalesce(func.max(AppliedCouponRow.applied_order), 0)).where(
                AppliedCouponRow.customer_external_id == applied.customer_external_id
            )
        )
        values = {
            **applied.model_dump(),
            "coupon_type": applied.coupon_type.value,
            "frequency": applied.frequency.value,
            "applied_order": int(order or 0) + 1,
            "created_at": utcnow(),
        }
        statement = dialect_insert(self._session, AppliedCouponRow).on_conflict_do_nothing(
            index_elements=["id"]
        )
        self._session.execute(statement, [values])
        stored = self.get_applied(applied.id)
        assert stored is not None
        return stored

    def list_applied(self, customer_external_id: str) -> list[AppliedCoupon]:
        """The customer's applied coupons in the order they were applied."""
        rows = self._session.execute(
            select(_APPLIED)
            .where(_APPLIED.c.customer_external_id == customer_external_id)
            .order_by(_APPLIED.c.applied_order, _APPLIED.c.id)
        )
        return [applied_coupon_model(row._mapping) for row in rows]

    def lock_active(self, customer_external_id: str) -> list[AppliedCoupon]:
        """The customer's active coupons in applied order, locked until commit."""
        return self.active(customer_external_id, lock=True)

    def active(self, customer_external_id: str, *, lock: bool = False) -> list[AppliedCoupon]:
        """The customer's active coupons in applied order (``lock``: until commit)."""
        rows = self._session.execute(
            _ACTIVE_LOCKED if lock else _ACTIVE, {"customer": customer_external_id}
        )
        return [applied_coupon_model(row._mapping) for row in rows]

    # ----------------------------------------------------------------------- wallets

    def wallet(self, customer_external_id: str) -> Wallet:
        """The customer's wallet (balance 0 when none was ever opened)."""
        balance = self._session.scalar(_BALANCE, {"customer": customer_external_id})
        return Wallet(customer_external_id=customer_external_id, balance_cents=int(balance or 0))

    def lock_wallet_balance(self, customer_external_id: str) -> int:
        """The wallet's balance in cents, the wallet locked until commit."""
        balance = self._session.scalar(_BALANCE_LOCKED, {"customer": customer_external_id})
        return int(balance or 0)

    def top_up(self, customer_external_id: str, amount_cents: int, transaction_id: str) -> Wallet:
        """Add credits (opening the wallet if needed); idempotent on ``transaction_id``."""
        session = self._session
        now = utcnow()
        session.execute(
            dialect_insert(session, WalletRow).on_conflict_do_nothing(
                index_elements=["customer_external_id"]
            ),
            [
                {
                    "customer_external_id": customer_external_id,
                    "balance_cents": 0,
                    "updated_at": now,
                }
            ],
        )
        inserted = session.execute(
            dialect_insert(session, WalletTransactionRow)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(WalletTransactionRow.id),
            [
                {
                    "id": transaction_id,
                    "customer_external_id": customer_external_id,
                    "kind": "top_up",
                    "amount_cents": amount_cents,
                    "invoice_id": None,
                    "created_at": now,
                }
            ],
        ).all()
        if inserted:
            session.execute(
                update(WalletRow)
                .where(WalletRow.customer_external_id == customer_external_id)
                .values(balance_cents=WalletRow.balance_cents + amount_cents, updated_at=now)
            )
        return self.wallet(customer_external_id)

    # ----------------------------------------------------------------------- finalization

    def consume(
        self, invoice_id: str, customer_external_id: str, totals: Totals, at: datetime
    ) -> None:
        """Persist what a finalization takes from coupons and from the wallet."""
        session = self._session
        consumptions = totals.coupon_consumptions
        if consumptions:
            session.execute(
                update(_APPLIED)
                .where(_APPLIED.c.id == bindparam("consumed_id"))
                .values(
                    amount_cents_remaining=bindparam("amount_remaining"),
                    frequency_duration_remaining=bindparam("duration_remaining"),
                    status=bindparam("new_status"),
                ),
                [
                    {
                        "consumed_id": consumption.applied_coupon_id,
                        "amount_remaining": consumption.amount_cents_remaining,
                        "duration_remaining": consumption.frequency_duration_remaining,
                        "new_status": "terminated" if consumption.terminated else "active",
                    }
                    for consumption in consumptions
                ],
            )
            session.execute(
                insert(table_of(CouponConsumptionRow)),
                [
                    {
                        "invoice_id": invoice_id,
                        "applied_coupon_id": consumption.applied_coupon_id,
                        "amount_cents": consumption.amount_cents,
                    }
                    for consumption in consumptions
                ],
            )
        credits = totals.prepaid_credit_amount_cents
        if credits > 0:
            session.execute(
                insert(table_of(WalletTransactionRow)),
                [
                    {
                        "id": f"invoice/{invoice_id}",
                        "customer_external_id": customer_external_id,
                        "kind": "invoice",
                        "amount_cents": credits,
                        "invoice_id": invoice_id,
                        "created_at": at,
                    }
                ],
            )
            session.execute(
                update(WalletRow)
                .where(WalletRow.customer_external_id == customer_external_id)
                .values(balance_cents=WalletRow.balance_cents - credits, updated_at=at)
            )
