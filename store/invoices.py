"""The invoices repository: invoices with their fees, operator adjustments, numbering.

Invoices come back as :class:`billing.models.Invoice`; the fees are replaced as a whole
while the invoice is a draft. After finalization the database's triggers refuse any
change to the invoice or its fees. The draft is unique on (subscription, period start).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
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
from store._rows import dialect_insert, utcnow
from store.schema import (
    AdjustedFeeRow,
    Base,
    BillingEntityRow,
    CustomerRow,
    FeeRow,
    InvoiceRow,
    InvoiceSequenceRow,
)

__all__ = ["InvoiceRepository"]

# Core statements over the tables (no ORM identity map, no reloads): the columns keep
# their types (UTCDateTime, ExactDecimal), so values read back exactly as stored.
_INVOICES = Base.metadata.tables[InvoiceRow.__tablename__]
_FEES = Base.metadata.tables[FeeRow.__tablename__]
_ADJUSTMENTS = Base.metadata.tables[AdjustedFeeRow.__tablename__]
_SEQUENCES = Base.metadata.tables[InvoiceSequenceRow.__tablename__]

# The columns are the domain models' fields: the models say what an invoice and a fee hold.
_INVOICE_FIELDS = tuple(name for name in Invoice.model_fields if name != "fees")
_FEE_FIELDS = tuple(Fee.model_fields)
_INVOICE_COLUMNS = tuple(_INVOICES.c[name] for name in _INVOICE_FIELDS)
# Fee columns labelled apart from the invoice's (both have coupons/taxes amounts).
_FEE_COLUMNS = tuple(_FEES.c[name].label(f"fee_{name}") for name in _FEE_FIELDS)
_FEE_RETURNING = tuple(_FEES.c[name] for name in _FEE_FIELDS)


def _approval_value(approval: InvoiceApproval | None) -> dict[str, Any] | None:
    return None if approval is None else approval.model_dump(mode="json", exclude_none=True)


def _fee_model(values: Mapping[Any, Any]) -> Fee:
    return Fee(**values)


def _invoice_model(header: Mapping[str, Any], fees: Sequence[Fee]) -> Invoice:
    return Invoice(**header, fees=tuple(fees))


def _with_fees(rows: Sequence[Row[Any]]) -> list[Invoice]:
    """Invoices from ``invoices LEFT JOIN fees`` rows (ordered by invoice, then position)."""
    invoices: list[Invoice] = []
    header: dict[str, Any] | None = None
    fees: list[Fee] = []
    for row in rows:
        values = row._mapping
        if header is None or header["id"] != values["id"]:
            if header is not None:
                invoices.append(_invoice_model(header, fees))
            header, fees = {name: values[name] for name in _INVOICE_FIELDS}, []
        if values["fee_code"] is not None:
            fees.append(_fee_model({name: values[f"fee_{name}"] for name in _FEE_FIELDS}))
    if header is not None:
        invoices.append(_invoice_model(header, fees))
    return invoices


def _select_with_fees() -> Any:
    return select(*_INVOICE_COLUMNS, *_FEE_COLUMNS).select_from(
        _INVOICES.outerjoin(_FEES, _FEES.c.invoice_id == _INVOICES.c.id)
    )


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

    def _one(self, statement: Any) -> Invoice | None:
        found = _with_fees(self._session.execute(statement.order_by(_FEES.c.position)).all())
        return found[0] if found else None

    def get(self, invoice_id: str) -> Invoice:
        """The invoice; raises :class:`NotFound` when there is none."""
        invoice = self.find(invoice_id)
        if invoice is None:
            raise NotFound(f"invoice {invoice_id!r} does not exist")
        return invoice

    def find(self, invoice_id: str) -> Invoice | None:
        return self._one(_select_with_fees().where(_INVOICES.c.id == invoice_id))

    def find_for_period(
        self, subscription_external_id: str, period_start: datetime
    ) -> Invoice | None:
        return self._one(
            _select_with_fees().where(
                _INVOICES.c.subscription_external_id == subscription_external_id,
                _INVOICES.c.period_start == period_start,
            )
        )

    def find_all(
        self,
        *,
        customer_external_id: str | None = None,
        subscription_external_id: str | None = None,
        status: InvoiceStatus | None = None,
    ) -> list[Invoice]:
        """Invoices by period start, then subscription; filters combine."""
        statement = _select_with_fees().order_by(
            _INVOICES.c.period_start,
            _INVOICES.c.subscription_external_id,
            _INVOICES.c.id,
            _FEES.c.position,
        )
        if customer_external_id is not None:
            statement = statement.where(_INVOICES.c.customer_external_id == customer_external_id)
        if subscription_external_id is not None:
            statement = statement.where(
                _INVOICES.c.subscription_external_id == subscription_external_id
            )
        if status is not None:
            statement = statement.where(_INVOICES.c.status == status.value)
        return _with_fees(self._session.execute(statement).all())

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
            locked = self._session.scalar(
                select(_INVOICES.c.id).where(_INVOICES.c.id == invoice_id).with_for_update()
            )
            if locked is None:
                raise NotFound(f"invoice {invoice_id!r} does not exist")
        return self.get(invoice_id)

    def total(self, invoice_id: str) -> int | None:
        """The invoice's total in cents (None: no such invoice), for a timeline entry."""
        return self._session.scalar(
            select(_INVOICES.c.total_amount_cents).where(_INVOICES.c.id == invoice_id)
        )

    def adjustments(self, invoice_id: str) -> dict[str, AdjustedFee]:
        """The operator's edits of the invoice, by charge code."""
        rows = self._session.execute(
            select(_ADJUSTMENTS).where(_ADJUSTMENTS.c.invoice_id == invoice_id)
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
            dialect_insert(self._session, InvoiceRow)
            .on_conflict_do_nothing(index_elements=["subscription_external_id", "period_start"])
            .returning(*_INVOICE_COLUMNS),
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
        return _invoice_model(dict(inserted[0]._mapping), ()) if inserted else None

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
            delete(_ADJUSTMENTS).where(
                _ADJUSTMENTS.c.invoice_id == invoice_id, _ADJUSTMENTS.c.charge_code == charge_code
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
            self._session.execute(delete(_FEES).where(_FEES.c.invoice_id == invoice_id))
        if not fees:
            return ()
        written = self._session.execute(
            insert(_FEES).returning(*_FEE_RETURNING, sort_by_parameter_order=True),
            [
                {"invoice_id": invoice_id, "position": position, **fee.model_dump()}
                for position, fee in enumerate(fees)
            ],
        )
        return tuple(_fee_model(row._mapping) for row in written)

    def _update(
        self, invoice_id: str, totals: Totals, stored: Sequence[Fee] | None, **values: Any
    ) -> Invoice:
        fees = self._write_fees(invoice_id, totals.fees, stored)
        header = self._session.execute(
            update(_INVOICES)
            .where(_INVOICES.c.id == invoice_id)
            .values(updated_at=utcnow(), **values, **_totals_values(totals))
            .returning(*_INVOICE_COLUMNS)
        ).one()
        return _invoice_model(dict(header._mapping), fees)

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
            update(_INVOICES)
            .where(_INVOICES.c.id == invoice_id)
            .values(updated_at=utcnow(), **values)
            .returning(*_INVOICE_COLUMNS)
        ).one()
        fees = self._session.execute(
            select(*_FEE_RETURNING)
            .where(_FEES.c.invoice_id == invoice_id)
            .order_by(_FEES.c.position)
        )
        return _invoice_model(dict(header._mapping), [_fee_model(row._mapping) for row in fees])

    def hold_for_approval(self, invoice_id: str, approval: InvoiceApproval) -> Invoice:
        """Keep a draft waiting for approval (its status stays ``draft``)."""
        return self._set(invoice_id, approval=_approval_value(approval))

    def set_deadline(self, invoice_id: str, expected_finalization_at: datetime) -> Invoice:
        """Move a draft's grace period end."""
        return self._set(invoice_id, expected_finalization_at=expected_finalization_at)

    def grace_period_start(self, invoice_id: str) -> tuple[datetime | None, bool]:
        """When the draft's grace period began, and whether the period fixed its length."""
        row = self._session.execute(
            select(_INVOICES.c.drafted_at, _INVOICES.c.grace_period_fixed).where(
                _INVOICES.c.id == invoice_id
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
                _INVOICES.c.id.label("invoice_id"),
                _INVOICES.c.subscription_external_id,
                _INVOICES.c.period_start,
                _INVOICES.c.drafted_at,
                _INVOICES.c.expected_finalization_at,
                _INVOICES.c.approval,
                func.coalesce(customers.c.grace_period_days, entities.c.grace_period_days).label(
                    "grace_period_days"
                ),
                func.coalesce(customers.c.timezone, entities.c.timezone).label("timezone"),
            )
            .join(customers, customers.c.external_id == _INVOICES.c.customer_external_id)
            .join(entities, entities.c.code == customers.c.billing_entity_code)
            .where(
                _INVOICES.c.status == InvoiceStatus.DRAFT.value,
                _INVOICES.c.drafted_at.is_not(None),
                _INVOICES.c.grace_period_fixed.is_(False),
            )
            .order_by(_INVOICES.c.drafted_at, _INVOICES.c.id)
        )
        rows: Sequence[Row[Any]] = self._session.execute(statement).all()  # type: ignore[assignment]
        return [row for row in rows if not row.approval or row.approval.get("status") != "required"]

    def previous_finalized_total(
        self, subscription_external_id: str, period_start: datetime
    ) -> int | None:
        """The total of the subscription's latest finalized invoice before ``period_start``."""
        return self._session.scalar(
            select(_INVOICES.c.total_amount_cents)
            .where(
                _INVOICES.c.subscription_external_id == subscription_external_id,
                _INVOICES.c.period_start < period_start,
                _INVOICES.c.status == InvoiceStatus.FINALIZED.value,
            )
            .order_by(_INVOICES.c.period_start.desc())
            .limit(1)
        )

    def next_number(self, billing_entity_code: str) -> int:
        """Next number of the entity's gapless sequence, in one upsert.

        The row stays locked until commit, so concurrent finalizations queue up; a
        rolled-back finalization gives its number back.
        """
        statement = dialect_insert(self._session, InvoiceSequenceRow)
        number = self._session.execute(
            statement.values(billing_entity_code=billing_entity_code, last_number=1)
            .on_conflict_do_update(
                index_elements=["billing_entity_code"],
                set_={"last_number": _SEQUENCES.c.last_number + 1},
            )
            .returning(_SEQUENCES.c.last_number)
        ).scalar_one()
        return int(number)
