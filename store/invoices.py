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

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from billing.errors import NotFound
from billing.invoicing import Totals
from billing.models import (
    AdjustedFee,
    AdjustmentMode,
    BillingContext,
    Fee,
    FeeKind,
    Invoice,
    InvoiceStatus,
)
from store._rows import dialect_insert, utcnow
from store.schema import AdjustedFeeRow, FeeRow, InvoiceRow, InvoiceSequenceRow

__all__ = ["InvoiceRepository"]


def _fee_model(row: FeeRow) -> Fee:
    return Fee(
        code=row.code,
        kind=FeeKind(row.kind),
        display_name=row.display_name,
        units=row.units,
        amount_cents=row.amount_cents,
        precise_amount=row.precise_amount,
        unit_amount=row.unit_amount,
        events_count=row.events_count,
        adjusted=row.adjusted,
        coupons_amount_cents=row.coupons_amount_cents,
        taxes_amount_cents=row.taxes_amount_cents,
        precise_taxes_amount=row.precise_taxes_amount,
    )


def _adjustment_model(row: AdjustedFeeRow) -> AdjustedFee:
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


class InvoiceRepository:
    """Invoices inside one unit of work."""

    def __init__(self, session: Session) -> None:
        self._session = session

    # ----------------------------------------------------------------------- reads

    def _model(self, row: InvoiceRow) -> Invoice:
        fees = self._session.scalars(
            select(FeeRow)
            .where(FeeRow.invoice_id == row.id)
            .order_by(FeeRow.position)
            .execution_options(populate_existing=True)
        )
        return Invoice(
            id=row.id,
            number=row.number,
            status=InvoiceStatus(row.status),
            currency=row.currency,
            customer_external_id=row.customer_external_id,
            subscription_external_id=row.subscription_external_id,
            billing_entity_code=row.billing_entity_code,
            period_start=row.period_start,
            period_end=row.period_end,
            issuing_date=row.issuing_date,
            fees=tuple(_fee_model(fee) for fee in fees),
            fees_amount_cents=row.fees_amount_cents,
            coupons_amount_cents=row.coupons_amount_cents,
            taxes_amount_cents=row.taxes_amount_cents,
            sub_total_excluding_taxes_amount_cents=row.sub_total_excluding_taxes_amount_cents,
            sub_total_including_taxes_amount_cents=row.sub_total_including_taxes_amount_cents,
            prepaid_credit_amount_cents=row.prepaid_credit_amount_cents,
            total_amount_cents=row.total_amount_cents,
            tax_rate=row.tax_rate,
        )

    def _reload(self, invoice_id: str) -> Invoice:
        row = self._session.scalar(
            select(InvoiceRow)
            .where(InvoiceRow.id == invoice_id)
            .execution_options(populate_existing=True)
        )
        assert row is not None
        return self._model(row)

    def get(self, invoice_id: str) -> Invoice:
        """The invoice; raises :class:`NotFound` when there is none."""
        row = self._session.get(InvoiceRow, invoice_id)
        if row is None:
            raise NotFound(f"invoice {invoice_id!r} does not exist")
        return self._model(row)

    def find(self, invoice_id: str) -> Invoice | None:
        row = self._session.get(InvoiceRow, invoice_id)
        return None if row is None else self._model(row)

    def find_for_period(
        self, subscription_external_id: str, period_start: datetime
    ) -> Invoice | None:
        row = self._session.scalar(
            select(InvoiceRow).where(
                InvoiceRow.subscription_external_id == subscription_external_id,
                InvoiceRow.period_start == period_start,
            )
        )
        return None if row is None else self._model(row)

    def find_all(
        self,
        *,
        customer_external_id: str | None = None,
        subscription_external_id: str | None = None,
        status: InvoiceStatus | None = None,
    ) -> list[Invoice]:
        """Invoices by period start, then subscription; filters combine."""
        statement = select(InvoiceRow).order_by(
            InvoiceRow.period_start, InvoiceRow.subscription_external_id
        )
        if customer_external_id is not None:
            statement = statement.where(InvoiceRow.customer_external_id == customer_external_id)
        if subscription_external_id is not None:
            statement = statement.where(
                InvoiceRow.subscription_external_id == subscription_external_id
            )
        if status is not None:
            statement = statement.where(InvoiceRow.status == status.value)
        return [self._model(row) for row in self._session.scalars(statement).all()]

    def lock(self, invoice_id: str) -> Invoice:
        """The invoice, locked until commit (PostgreSQL; SQLite's write lock is held)."""
        row = self._session.scalar(
            select(InvoiceRow)
            .where(InvoiceRow.id == invoice_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if row is None:
            raise NotFound(f"invoice {invoice_id!r} does not exist")
        return self._model(row)

    def adjustments(self, invoice_id: str) -> dict[str, AdjustedFee]:
        """The operator's edits of the invoice, by charge code."""
        rows = self._session.scalars(
            select(AdjustedFeeRow)
            .where(AdjustedFeeRow.invoice_id == invoice_id)
            .execution_options(populate_existing=True)
        )
        return {row.charge_code: _adjustment_model(row) for row in rows}

    # ----------------------------------------------------------------------- writes

    def add_draft(
        self,
        invoice_id: str,
        number: str,
        context: BillingContext,
        period_start: datetime,
        period_end: datetime,
    ) -> bool:
        """Insert an empty draft; False when one exists for (subscription, period start)."""
        now = utcnow()
        inserted = self._session.execute(
            dialect_insert(self._session, InvoiceRow)
            .on_conflict_do_nothing(index_elements=["subscription_external_id", "period_start"])
            .returning(InvoiceRow.__table__.c.id),
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
                    "created_at": now,
                    "updated_at": now,
                }
            ],
        ).all()
        return bool(inserted)

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

    def delete_adjustment(self, invoice_id: str, charge_code: str) -> None:
        self._session.execute(
            delete(AdjustedFeeRow).where(
                AdjustedFeeRow.invoice_id == invoice_id, AdjustedFeeRow.charge_code == charge_code
            )
        )

    def _write_fees(self, invoice_id: str, fees: Sequence[Fee]) -> None:
        """Replace the invoice's fees (only possible while it is a draft: see the triggers)."""
        self._session.execute(delete(FeeRow).where(FeeRow.invoice_id == invoice_id))
        if fees:
            self._session.execute(
                insert(FeeRow),
                [
                    {"invoice_id": invoice_id, "position": position, **fee.model_dump()}
                    for position, fee in enumerate(fees)
                ],
            )

    def _update(self, invoice_id: str, totals: Totals, **values: Any) -> Invoice:
        self._write_fees(invoice_id, totals.fees)
        self._session.execute(
            update(InvoiceRow)
            .where(InvoiceRow.id == invoice_id)
            .values(updated_at=utcnow(), **values, **_totals_values(totals))
        )
        return self._reload(invoice_id)

    def save_draft(self, invoice_id: str, totals: Totals, tax_rate: Decimal) -> Invoice:
        """Store a draft's recomputed fees and totals."""
        return self._update(invoice_id, totals, tax_rate=tax_rate)

    def close(
        self, invoice_id: str, totals: Totals, tax_rate: Decimal, issued_at: datetime
    ) -> Invoice:
        """Close an empty invoice: no number, nothing consumed."""
        return self._update(
            invoice_id,
            totals,
            status=InvoiceStatus.CLOSED.value,
            number="",
            issuing_date=issued_at,
            tax_rate=tax_rate,
        )

    def finalize(
        self, invoice_id: str, totals: Totals, tax_rate: Decimal, number: str, issued_at: datetime
    ) -> Invoice:
        """Finalize the invoice with its final number and totals."""
        return self._update(
            invoice_id,
            totals,
            status=InvoiceStatus.FINALIZED.value,
            number=number,
            issuing_date=issued_at,
            tax_rate=tax_rate,
        )

    def next_number(self, billing_entity_code: str) -> int:
        """Next number of the entity's gapless sequence.

        The UPDATE locks the sequence row until commit, so concurrent finalizations queue
        up; a rolled-back finalization gives its number back.
        """
        self._session.execute(
            dialect_insert(self._session, InvoiceSequenceRow).on_conflict_do_nothing(
                index_elements=["billing_entity_code"]
            ),
            [{"billing_entity_code": billing_entity_code, "last_number": 0}],
        )
        number = self._session.scalar(
            update(InvoiceSequenceRow)
            .where(InvoiceSequenceRow.billing_entity_code == billing_entity_code)
            .values(last_number=InvoiceSequenceRow.last_number + 1)
            .returning(InvoiceSequenceRow.last_number)
        )
        assert number is not None
        return int(number)
