"""The invoices repository: invoices with their fees, operator adjustments, numbering.

Invoices come back as :class:`billing.models.Invoice`; the fees are replaced as a whole
while the invoice is a draft. After finalization the database's triggers refuse any
change to the invoice or its fees. The draft is unique on (subscription, period start).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, delete, func, select
from sqlalchemy.orm import Session

from billing.approval import InvoiceApproval
from billing.errors import NotFound
from billing.invoicing import Totals
from billing.models import (
    AdjustedFee,
    AdjustmentMode,
    BillingContext,
    Fee,
    Invoice,
    InvoiceStatus,
)
from store._invoice_rows import (
    ADJUSTMENTS,
    BY_ID,
    DELETE_FEES,
    FEES,
    INSERT_FEES,
    INVOICES,
    LOCK,
    SELECT_ADJUSTMENTS,
    SELECT_FEES,
    UPDATE,
    add_draft_statement,
    fee_model,
    invoice_model,
    next_number_statement,
    select_with_fees,
    with_fees,
)
from store._rows import (
    dialect_insert,
    dialect_name,
    utcnow,
)
from store.schema import (
    AdjustedFeeRow,
    BillingEntityRow,
    CustomerRow,
)

__all__ = ["InvoiceRepository"]


def _approval_value(approval: InvoiceApproval | None) -> dict[str, Any] | None:
    return None if approval is None else approval.model_dump(mode="json", exclude_none=True)


def _adjustment_model(row: Row[Any]) -> AdjustedFee:
    return AdjustedFee(
        charge_code=row.charge_code,
        mode=AdjustmentMode(row.mode),
        units=row.units,
        unit_amount=row.unit_amount,
        display_name=row.display_name,
    )


def _totals_values(totals: Totals) -> dict[str, Any]:
    return {
        "fees_amount_cents": totals.fees_amount_cents,
        "coupons_amount_cents": totals.coupons_amount_cents,
        "taxes_amount_cents": totals.taxes_amount_cents,
        "sub_total_excluding_taxes_amount_cents": totals.sub_total_excluding_taxes_amount_cents,
        "sub_total_including_taxes_amount_cents": totals.sub_total_including_taxes_amount_cents,
        "prepaid_credit_amount_cents": totals.prepaid_credit_amount_cents,
        "total_amount_cents": totals.total_amount_cents,
    }


def _same_fees(stored: Sequence[Fee], computed: Sequence[Fee]) -> bool:
    """Equal as written (decimal text included), so skipping the rewrite changes nothing."""
    return [fee.model_dump(mode="json") for fee in stored] == [
        fee.model_dump(mode="json") for fee in computed
    ]


class InvoiceRepository:
    """Invoices inside one unit of work."""

    def __init__(self, session: Session) -> None:
        self._session = session

    # ----------------------------------------------------------------------- reads

    def _one(self, statement: Any, parameters: dict[str, Any] | None = None) -> Invoice | None:
        found = with_fees(self._session.execute(statement, parameters).all())
        return found[0] if found else None

    def get(self, invoice_id: str) -> Invoice:
        """The invoice; raises :class:`NotFound` when there is none."""
        invoice = self.find(invoice_id)
        if invoice is None:
            raise NotFound(f"invoice {invoice_id!r} does not exist")
        return invoice

    def find(self, invoice_id: str) -> Invoice | None:
        return self._one(BY_ID, {"invoice_key": invoice_id})

    def find_for_period(
        self, subscription_external_id: str, period_start: datetime
    ) -> Invoice | None:
        return self._one(
            select_with_fees()
            .where(
                INVOICES.c.subscription_external_id == subscription_external_id,
                INVOICES.c.period_start == period_start,
            )
            .order_by(FEES.c.position)
        )

    def statuses(
        self, subscription_external_ids: Sequence[str], period_starts: Sequence[datetime]
    ) -> dict[tuple[str, datetime], InvoiceStatus]:
        """The status of every invoice of these subscriptions starting at one of these
        instants, by (subscription, period start): one statement, no fees."""
        rows = self._session.execute(
            select(INVOICES.c.subscription_external_id, INVOICES.c.period_start, INVOICES.c.status)
            .where(INVOICES.c.subscription_external_id.in_(subscription_external_ids))
            .where(INVOICES.c.period_start.in_(period_starts))
        )
        return {(row[0], row[1]): InvoiceStatus(row[2]) for row in rows}

    def find_all(
        self,
        *,
        customer_external_id: str | None = None,
        subscription_external_id: str | None = None,
        status: InvoiceStatus | None = None,
    ) -> list[Invoice]:
        """Invoices by period start, then subscription; filters combine."""
        statement = select_with_fees().order_by(
            INVOICES.c.period_start,
            INVOICES.c.subscription_external_id,
            INVOICES.c.id,
            FEES.c.position,
        )
        if customer_external_id is not None:
            statement = statement.where(INVOICES.c.customer_external_id == customer_external_id)
        if subscription_external_id is not None:
            statement = statement.where(
                INVOICES.c.subscription_external_id == subscription_external_id
            )
        if status is not None:
            statement = statement.where(INVOICES.c.status == status.value)
        return with_fees(self._session.execute(statement).all())

    def lock(self, invoice_id: str) -> Invoice:
        """The invoice with its fees, locked until commit, read after the lock is held.

        PostgreSQL: the row lock comes first, in a statement of its own. Under READ
        COMMITTED each statement sees what committed before it began, so a caller that
        waited for the lock reads what the holder wrote. (A ``FOR UPDATE`` that also
        joined the fees would return the invoice row's new version but the fees of the
        snapshot taken before the wait.) SQLite: the write lock is held since ``BEGIN
        IMMEDIATE``, so the read alone suffices.
        """
        if self._session.get_bind().dialect.name == "postgresql":
            locked = self._session.scalar(LOCK, {"invoice_key": invoice_id})
            if locked is None:
                raise NotFound(f"invoice {invoice_id!r} does not exist")
        return self.get(invoice_id)

    def total(self, invoice_id: str) -> int | None:
        """The invoice's total in cents (None: no such invoice), for a timeline entry."""
        return self._session.scalar(
            select(INVOICES.c.total_amount_cents).where(INVOICES.c.id == invoice_id)
        )

    def adjustments(self, invoice_id: str) -> dict[str, AdjustedFee]:
        """The operator's edits of the invoice, by charge code."""
        rows = self._session.execute(SELECT_ADJUSTMENTS, {"invoice_key": invoice_id})
        return {row.charge_code: _adjustment_model(row) for row in rows}

    # ----------------------------------------------------------------------- writes

    def add_draft(
        self,
        invoice_id: str,
        number: str,
        context: BillingContext,
        period_start: datetime,
        period_end: datetime,
        *,
        drafted_at: datetime | None = None,
        expected_finalization_at: datetime | None = None,
        grace_period_fixed: bool = False,
    ) -> Invoice | None:
        """Insert an empty draft and return it; None when one exists for (subscription,
        period start). ``drafted_at`` and ``expected_finalization_at`` bound its grace
        period (``grace_period_fixed``: set by the period itself, not by the settings)."""
        now = utcnow()
        inserted = self._session.execute(
            add_draft_statement(dialect_name(self._session)),
            [
                {
                    "id": invoice_id,
                    "number": number,
                    "status": InvoiceStatus.DRAFT.value,
                    "currency": context.currency,
                    "billing_entity_code": context.billing_entity.code,
                    "customer_external_id": context.customer.external_id,
                    "subscription_external_id": context.subscription.external_id,
                    "period_start": period_start,
                    "period_end": period_end,
                    "issuing_date": None,
                    "fees_amount_cents": 0,
                    "coupons_amount_cents": 0,
                    "taxes_amount_cents": 0,
                    "sub_total_excluding_taxes_amount_cents": 0,
                    "sub_total_including_taxes_amount_cents": 0,
                    "prepaid_credit_amount_cents": 0,
                    "total_amount_cents": 0,
                    "tax_rate": 0,
                    "drafted_at": drafted_at,
                    "expected_finalization_at": expected_finalization_at,
                    "grace_period_fixed": grace_period_fixed,
                    "approval": None,
                    "created_at": now,
                    "updated_at": now,
                }
            ],
        ).all()
        return invoice_model(dict(inserted[0]._mapping), ()) if inserted else None

    def save_adjustment(self, invoice_id: str, adjustment: AdjustedFee) -> None:
        """Store an operator's edit, replacing an earlier one of the same charge."""
        statement = dialect_insert(self._session, AdjustedFeeRow)
        self._session.execute(
            statement.on_conflict_do_update(
                index_elements=["invoice_id", "charge_code"],
                set_={
                    name: statement.excluded[name]
                    for name in ("mode", "units", "unit_amount", "display_name")
                },
            ),
            [
                {
                    "invoice_id": invoice_id,
                    "charge_code": adjustment.charge_code,
                    "mode": adjustment.mode.value,
                    "units": adjustment.units,
                    "unit_amount": adjustment.unit_amount,
                    "display_name": adjustment.display_name,
                }
            ],
        )

    def delete_adjustment(self, invoice_id: str, charge_code: str) -> bool:
        """Drop an operator's edit; whether there was one."""
        result = self._session.execute(
            delete(ADJUSTMENTS).where(
                ADJUSTMENTS.c.invoice_id == invoice_id, ADJUSTMENTS.c.charge_code == charge_code
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def _write_fees(
        self, invoice_id: str, fees: Sequence[Fee], stored: Sequence[Fee] | None
    ) -> tuple[Fee, ...]:
        """Replace the invoice's fees (only possible while it is a draft: see the triggers).

        ``stored``: the fees as read in this transaction (None: unknown). Unchanged fees
        are not rewritten; the fees come back as stored (RETURNING), never re-read.
        """
        if stored is not None and _same_fees(stored, fees):
            return tuple(stored)
        if stored is None or stored:
            self._session.execute(DELETE_FEES, {"invoice_key": invoice_id})
        if not fees:
            return ()
        written = self._session.execute(
            INSERT_FEES,
            [
                {"invoice_id": invoice_id, "position": position, **fee.model_dump()}
                for position, fee in enumerate(fees)
            ],
        )
        return tuple(fee_model(row._mapping) for row in written)

    def _update(
        self, invoice_id: str, totals: Totals, stored: Sequence[Fee] | None, **values: Any
    ) -> Invoice:
        fees = self._write_fees(invoice_id, totals.fees, stored)
        header = self._session.execute(
            UPDATE,
            {
                "invoice_key": invoice_id,
                "updated_at": utcnow(),
                **values,
                **_totals_values(totals),
            },
        ).one()
        return invoice_model(dict(header._mapping), fees)

    def save_draft(
        self,
        invoice_id: str,
        totals: Totals,
        tax_rate: Decimal,
        *,
        stored_fees: Sequence[Fee] | None = None,
    ) -> Invoice:
        """Store a draft's recomputed fees and totals (``stored_fees``: as read, if known)."""
        return self._update(invoice_id, totals, stored_fees, tax_rate=tax_rate)

    def close(
        self,
        invoice_id: str,
        totals: Totals,
        tax_rate: Decimal,
        issued_at: datetime,
        *,
        stored_fees: Sequence[Fee] | None = None,
        approval: InvoiceApproval | None = None,
    ) -> Invoice:
        """Close an empty invoice: no number, nothing consumed."""
        return self._update(
            invoice_id,
            totals,
            stored_fees,
            status=InvoiceStatus.CLOSED.value,
            number="",
            issuing_date=issued_at,
            tax_rate=tax_rate,
            expected_finalization_at=None,
            approval=_approval_value(approval),
        )

    def finalize(
        self,
        invoice_id: str,
        totals: Totals,
        tax_rate: Decimal,
        number: str,
        issued_at: datetime,
        *,
        stored_fees: Sequence[Fee] | None = None,
        approval: InvoiceApproval | None = None,
    ) -> Invoice:
        """Finalize the invoice with its final number and totals."""
        return self._update(
            invoice_id,
            totals,
            stored_fees,
            status=InvoiceStatus.FINALIZED.value,
            number=number,
            issuing_date=issued_at,
            tax_rate=tax_rate,
            expected_finalization_at=None,
            approval=_approval_value(approval),
        )

    def _set(self, invoice_id: str, **values: Any) -> Invoice:
        """Change header columns of a draft (not its fees or totals); the invoice back."""
        header = self._session.execute(
            UPDATE, {"invoice_key": invoice_id, "updated_at": utcnow(), **values}
        ).one()
        fees = self._session.execute(SELECT_FEES, {"invoice_key": invoice_id})
        return invoice_model(dict(header._mapping), [fee_model(row._mapping) for row in fees])

    def hold_for_approval(self, invoice_id: str, approval: InvoiceApproval) -> Invoice:
        """Keep a draft waiting for approval (its status stays ``draft``)."""
        return self._set(invoice_id, approval=_approval_value(approval))

    def set_deadline(self, invoice_id: str, expected_finalization_at: datetime) -> Invoice:
        """Move a draft's grace period end."""
        return self._set(invoice_id, expected_finalization_at=expected_finalization_at)

    def grace_period_start(self, invoice_id: str) -> tuple[datetime | None, bool]:
        """When the draft's grace period began, and whether the period fixed its length."""
        row = self._session.execute(
            select(INVOICES.c.drafted_at, INVOICES.c.grace_period_fixed).where(
                INVOICES.c.id == invoice_id
            )
        ).one()
        return row.drafted_at, bool(row.grace_period_fixed)

    def running_drafts_with_grace_periods(self) -> list[Row[Any]]:
        """Drafts not held, not fixed, drafted on this release: with their grace period days
        and timezone as the settings give them now (the customer's, else the billing
        entity's)."""
        customers = CustomerRow.__table__
        entities = BillingEntityRow.__table__
        statement = (
            select(
                INVOICES.c.id.label("invoice_id"),
                INVOICES.c.subscription_external_id,
                INVOICES.c.period_start,
                INVOICES.c.drafted_at,
                INVOICES.c.expected_finalization_at,
                INVOICES.c.approval,
                func.coalesce(customers.c.grace_period_days, entities.c.grace_period_days).label(
                    "grace_period_days"
                ),
                func.coalesce(customers.c.timezone, entities.c.timezone).label("timezone"),
            )
            .join(customers, customers.c.external_id == INVOICES.c.customer_external_id)
            .join(entities, entities.c.code == customers.c.billing_entity_code)
            .where(
                INVOICES.c.status == InvoiceStatus.DRAFT.value,
                INVOICES.c.drafted_at.is_not(None),
                INVOICES.c.grace_period_fixed.is_(False),
            )
            .order_by(INVOICES.c.drafted_at, INVOICES.c.id)
        )
        rows: Sequence[Row[Any]] = self._session.execute(statement).all()  # type: ignore[assignment]
        return [row for row in rows if not row.approval or row.approval.get("status") != "required"]

    def previous_finalized_total(
        self, subscription_external_id: str, period_start: datetime
    ) -> int | None:
        """The total of the subscription's latest finalized invoice before ``period_start``."""
        return self._session.scalar(
            select(INVOICES.c.total_amount_cents)
            .where(
                INVOICES.c.subscription_external_id == subscription_external_id,
                INVOICES.c.period_start < period_start,
                INVOICES.c.status == InvoiceStatus.FINALIZED.value,
            )
            .order_by(INVOICES.c.period_start.desc())
            .limit(1)
        )

    def next_number(self, billing_entity_code: str) -> int:
        """Next number of the entity's gapless sequence, in one upsert.

        The row stays locked until commit, so concurrent finalizations queue up; a
        rolled-back finalization gives its number back.
        """
        number = self._session.execute(
            next_number_statement(dialect_name(self._session)), {"entity": billing_entity_code}
        ).scalar_one()
        return int(number)
