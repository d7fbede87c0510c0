"""The invoice and fee tables as Core statements, and their rows as domain models.

Private to :mod:`store.invoices`. No ORM identity map, no reloads: the columns keep their
types (UTCDateTime, ExactDecimal), so values read back exactly as stored. The statements
run for every period are built once and bound per call, so they are neither rebuilt nor
keyed again for the compiled cache.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Row, bindparam, delete, insert, select, update

from billing.models import Fee, Invoice
from store._rows import dialect_insert_for, insert_or_skip_for, table_of
from store.schema import AdjustedFeeRow, FeeRow, InvoiceRow, InvoiceSequenceRow

INVOICES = table_of(InvoiceRow)
FEES = table_of(FeeRow)
ADJUSTMENTS = table_of(AdjustedFeeRow)
SEQUENCES = table_of(InvoiceSequenceRow)

# The columns are the domain models' fields: the models say what an invoice and a fee hold.
INVOICE_FIELDS = tuple(name for name in Invoice.model_fields if name != "fees")
FEE_FIELDS = tuple(Fee.model_fields)
INVOICE_COLUMNS = tuple(INVOICES.c[name] for name in INVOICE_FIELDS)
# Fee columns labelled apart from the invoice's (both have coupons/taxes amounts).
FEE_COLUMNS = tuple(FEES.c[name].label(f"fee_{name}") for name in FEE_FIELDS)
FEE_RETURNING = tuple(FEES.c[name] for name in FEE_FIELDS)


def fee_model(values: Mapping[Any, Any]) -> Fee:
    return Fee(**values)


def invoice_model(header: Mapping[str, Any], fees: Sequence[Fee]) -> Invoice:
    return Invoice(**header, fees=tuple(fees))


def with_fees(rows: Sequence[Row[Any]]) -> list[Invoice]:
    """Invoices from ``invoices LEFT JOIN fees`` rows (ordered by invoice, then position)."""
    invoices: list[Invoice] = []
    header: dict[str, Any] | None = None
    fees: list[Fee] = []
    for row in rows:
        values = row._mapping
        if header is None or header["id"] != values["id"]:
            if header is not None:
                invoices.append(invoice_model(header, fees))
            header, fees = {name: values[name] for name in INVOICE_FIELDS}, []
        if values["fee_code"] is not None:
            fees.append(fee_model({name: values[f"fee_{name}"] for name in FEE_FIELDS}))
    if header is not None:
        invoices.append(invoice_model(header, fees))
    return invoices


def select_with_fees() -> Any:
    return select(*INVOICE_COLUMNS, *FEE_COLUMNS).select_from(
        INVOICES.outerjoin(FEES, FEES.c.invoice_id == INVOICES.c.id)
    )


# The per-period statements: an invoice by id, its row lock, its adjustments, its header
# update (SET from the parameters' column names), its fees.
BY_ID = (
    select_with_fees().where(INVOICES.c.id == bindparam("invoice_key")).order_by(FEES.c.position)
)
LOCK = select(INVOICES.c.id).where(INVOICES.c.id == bindparam("invoice_key")).with_for_update()
SELECT_ADJUSTMENTS = select(ADJUSTMENTS).where(ADJUSTMENTS.c.invoice_id == bindparam("invoice_key"))
UPDATE = (
    update(INVOICES).where(INVOICES.c.id == bindparam("invoice_key")).returning(*INVOICE_COLUMNS)
)
SELECT_FEES = (
    select(*FEE_RETURNING)
    .where(FEES.c.invoice_id == bindparam("invoice_key"))
    .order_by(FEES.c.position)
)
DELETE_FEES = delete(FEES).where(FEES.c.invoice_id == bindparam("invoice_key"))
INSERT_FEES = insert(FEES).returning(*FEE_RETURNING, sort_by_parameter_order=True)


@functools.cache
def add_draft_statement(dialect: str) -> Any:
    return insert_or_skip_for(
        dialect, InvoiceRow, ("subscription_external_id", "period_start")
    ).returning(*INVOICE_COLUMNS)


@functools.cache
def next_number_statement(dialect: str) -> Any:
    return (
        dialect_insert_for(dialect, InvoiceSequenceRow)
        .values(billing_entity_code=bindparam("entity"), last_number=1)
        .on_conflict_do_update(
            index_elements=["billing_entity_code"],
            set_={"last_number": SEQUENCES.c.last_number + 1},
        )
        .returning(SEQUENCES.c.last_number)
    )
