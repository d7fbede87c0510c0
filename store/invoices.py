"""Invoices: draft, refresh, fee adjustments and finalization, one transaction each.

Pricing lives in ``billing``: this module loads usage and adjustments, calls
:func:`billing.fees.compute_fees` and :mod:`billing.invoicing`, and persists the result.
Each function is idempotent on its business key, because Temporal may run an activity
more than once: the draft on (subscription, period start), the finalization on the
invoice (a second call returns the stored outcome and consumes nothing).

Finalization, in one transaction: lock the invoice, recompute its fees, then either
close it (empty, and the customer's setting says skip: no number, no webhook, nothing
consumed) or apply coupons, taxes and prepaid credits, take the next number of the
billing entity's gapless sequence and write the ``invoice.created`` outbox rows.
Afterwards the database's triggers refuse any change to the invoice or its fees.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.orm import Session

from billing.errors import InvoiceNotEditable, NotFound, UnknownCharge
from billing.fees import compute_fees
from billing.invoicing import Totals, draft_totals, finalization_totals, should_close, tax_rate
from billing.models import (
    AdjustedFee,
    AdjustmentMode,
    AppliedCoupon,
    Fee,
    FeeKind,
    Invoice,
    InvoiceStatus,
)
from store._rows import (
    BillingContext,
    applied_coupon_model,
    dialect_insert,
    load_context,
    transaction,
    utcnow,
)
from store.schema import (
    AdjustedFeeRow,
    AppliedCouponRow,
    CouponConsumptionRow,
    FeeRow,
    InvoiceRow,
    InvoiceSequenceRow,
    WalletRow,
    WalletTransactionRow,
)
from store.usage import usage_in
from store.webhooks import INVOICE_CREATED, INVOICE_DRAFTED, delivery_ids_of, queue_deliveries

__all__ = [
    "FinalizationOutcome",
    "adjust_fee",
    "create_draft",
    "draft_number",
    "finalize_invoice",
    "find_invoice",
    "get_invoice",
    "invoice_id_for",
    "list_adjustments",
    "list_invoices",
    "queue_drafted_webhook",
    "refresh_draft",
    "remove_adjustment",
]

_INVOICE_NAMESPACE = uuid.UUID("0b7f8f0e-3c55-4f57-9a59-1c9a8f1d2e64")
NUMBER_DIGITS = 6


class FinalizationOutcome(BaseModel):
    """The finalized (or closed) invoice and the ``invoice.created`` deliveries to send."""

    model_config = ConfigDict(frozen=True)

    invoice: Invoice
    delivery_ids: list[str] = []


def invoice_id_for(subscription_external_id: str, period_start: datetime) -> str:
    """The invoice id of a (subscription, period): the same key always gives the same id."""
    key = f"{subscription_external_id}/{period_start.astimezone(UTC).isoformat()}"
    return str(uuid.uuid5(_INVOICE_NAMESPACE, key))


def draft_number(invoice_prefix: str) -> str:
    return f"{invoice_prefix}-DRAFT"


def final_number(invoice_prefix: str, sequence: int) -> str:
    return f"{invoice_prefix}-{sequence:0{NUMBER_DIGITS}d}"


# --------------------------------------------------------------------------- rows <-> models


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


def _invoice_model(session: Session, row: InvoiceRow) -> Invoice:
    fees = session.scalars(
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


def _adjustment_model(row: AdjustedFeeRow) -> AdjustedFee:
    return AdjustedFee(
        charge_code=row.charge_code,
        mode=AdjustmentMode(row.mode),
        units=row.units,
        unit_amount=row.unit_amount,
        display_name=row.display_name,
    )


def _adjustments(session: Session, invoice_id: str) -> dict[str, AdjustedFee]:
    rows = session.scalars(
        select(AdjustedFeeRow)
        .where(AdjustedFeeRow.invoice_id == invoice_id)
        .execution_options(populate_existing=True)
    )
    return {row.charge_code: _adjustment_model(row) for row in rows}


# --------------------------------------------------------------------------- steps


def _lock(session: Session, invoice_id: str) -> InvoiceRow:
    """The invoice row, locked until commit (PostgreSQL; SQLite's write lock is held)."""
    row = session.scalar(
        select(InvoiceRow)
        .where(InvoiceRow.id == invoice_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if row is None:
        raise NotFound(f"invoice {invoice_id!r} does not exist")
    return row


def _reload(session: Session, invoice_id: str) -> InvoiceRow:
    row = session.scalar(
        select(InvoiceRow)
        .where(InvoiceRow.id == invoice_id)
        .execution_options(populate_existing=True)
    )
    assert row is not None
    return row


def _require_draft(row: InvoiceRow) -> None:
    if row.status != InvoiceStatus.DRAFT.value:
        raise InvoiceNotEditable(row.number or row.id, row.status)


def _compute(
    session: Session, context: BillingContext, invoice_id: str, start: datetime, end: datetime
) -> tuple[Fee, ...]:
    usage = usage_in(session, context, start, end)
    return compute_fees(
        context.plan,
        context.metrics,
        context.subscription,
        start,
        end,
        context.currency,
        context.timezone,
        usage,
        _adjustments(session, invoice_id),
    )


def _write_fees(session: Session, invoice_id: str, fees: Sequence[Fee]) -> None:
    """Replace the invoice's fees (only possible while it is a draft: see the triggers)."""
    session.execute(delete(FeeRow).where(FeeRow.invoice_id == invoice_id))
    if fees:
        session.execute(
            insert(FeeRow),
            [
                {"invoice_id": invoice_id, "position": position, **fee.model_dump()}
                for position, fee in enumerate(fees)
            ],
        )


def _recompute_draft(
    session: Session, row: InvoiceRow, context: BillingContext | None = None
) -> Invoice:
    """Recompute a draft's fees and totals; ``context`` when the caller has loaded it."""
    if context is None:
        context = load_context(session, row.subscription_external_id)
    fees = _compute(session, context, row.id, row.period_start, row.period_end)
    rate = tax_rate(context.customer, context.billing_entity)
    totals = draft_totals(fees, rate, context.currency)
    _write_fees(session, row.id, totals.fees)
    session.execute(
        update(InvoiceRow)
        .where(InvoiceRow.id == row.id)
        .values(tax_rate=rate, updated_at=utcnow(), **_totals_values(totals))
    )
    return _invoice_model(session, _reload(session, row.id))


def _next_number(session: Session, billing_entity_code: str) -> int:
    """Next number of the entity's gapless sequence.

    The UPDATE locks the sequence row until commit, so concurrent finalizations queue
    up; a rolled-back finalization gives its number back.
    """
    session.execute(
        dialect_insert(session, InvoiceSequenceRow).on_conflict_do_nothing(
            index_elements=["billing_entity_code"]
        ),
        [{"billing_entity_code": billing_entity_code, "last_number": 0}],
    )
    number = session.scalar(
        update(InvoiceSequenceRow)
        .where(InvoiceSequenceRow.billing_entity_code == billing_entity_code)
        .values(last_number=InvoiceSequenceRow.last_number + 1)
        .returning(InvoiceSequenceRow.last_number)
    )
    assert number is not None
    return int(number)


def _active_coupons(session: Session, customer_external_id: str) -> list[AppliedCoupon]:
    rows = session.scalars(
        select(AppliedCouponRow)
        .where(
            AppliedCouponRow.customer_external_id == customer_external_id,
            AppliedCouponRow.status == "active",
        )
        .order_by(AppliedCouponRow.applied_order, AppliedCouponRow.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return [applied_coupon_model(row) for row in rows]


def _wallet_balance(session: Session, customer_external_id: str) -> int:
    balance = session.scalar(
        select(WalletRow.balance_cents)
        .where(WalletRow.customer_external_id == customer_external_id)
        .with_for_update()
    )
    return int(balance or 0)


def _consume(
    session: Session, invoice_id: str, customer: str, totals: Totals, at: datetime
) -> None:
    """Persist what the finalization takes from coupons and from the wallet."""
    for consumption in totals.coupon_consumptions:
        session.execute(
            update(AppliedCouponRow)
            .where(AppliedCouponRow.id == consumption.applied_coupon_id)
            .values(
                amount_cents_remaining=consumption.amount_cents_remaining,
                frequency_duration_remaining=consumption.frequency_duration_remaining,
                status="terminated" if consumption.terminated else "active",
            )
        )
        session.execute(
            insert(CouponConsumptionRow),
            [
                {
                    "invoice_id": invoice_id,
                    "applied_coupon_id": consumption.applied_coupon_id,
                    "amount_cents": consumption.amount_cents,
                }
            ],
        )
    credits = totals.prepaid_credit_amount_cents
    if credits > 0:
        session.execute(
            insert(WalletTransactionRow),
            [
                {
                    "id": f"invoice/{invoice_id}",
                    "customer_external_id": customer,
                    "kind": "invoice",
                    "amount_cents": credits,
                    "invoice_id": invoice_id,
                    "created_at": at,
                }
            ],
        )
        session.execute(
            update(WalletRow)
            .where(WalletRow.customer_external_id == customer)
            .values(balance_cents=WalletRow.balance_cents - credits, updated_at=at)
        )


# --------------------------------------------------------------------------- public API


def create_draft(
    engine: Engine, subscription_external_id: str, period_start: datetime, period_end: datetime
) -> Invoice:
    """The draft of a (subscription, period); returns the stored invoice if it exists."""
    invoice_id = invoice_id_for(subscription_external_id, period_start)
    with transaction(engine) as session:
        existing = session.get(InvoiceRow, invoice_id)
        if existing is not None:
            return _invoice_model(session, existing)
        context = load_context(session, subscription_external_id)
        now = utcnow()
        inserted = session.execute(
            dialect_insert(session, InvoiceRow)
            .on_conflict_do_nothing(index_elements=["subscription_external_id", "period_start"])
            .returning(InvoiceRow.__table__.c.id),
            [
                {
                    "id": invoice_id,
                    "number": draft_number(context.billing_entity.invoice_prefix),
                    "status": InvoiceStatus.DRAFT.value,
                    "currency": context.currency,
                    "billing_entity_code": context.billing_entity.code,
                    "customer_external_id": context.customer.external_id,
                    "subscription_external_id": subscription_external_id,
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
        row = _reload(session, invoice_id)
        if not inserted:  # created concurrently by another attempt
            return _invoice_model(session, row)
        return _recompute_draft(session, row, context)


def refresh_draft(engine: Engine, invoice_id: str) -> Invoice:
    """Recompute every fee of a draft from its events and adjustments."""
    with transaction(engine) as session:
        row = _lock(session, invoice_id)
        _require_draft(row)
        return _recompute_draft(session, row)


def adjust_fee(engine: Engine, invoice_id: str, adjustment: AdjustedFee) -> Invoice:
    """Store an operator's fee edit (replacing an earlier one) and recompute the draft."""
    with transaction(engine) as session:
        row = _lock(session, invoice_id)
        _require_draft(row)
        context = load_context(session, row.subscription_external_id)
        codes = [charge.code for charge in context.plan.charges]
        if adjustment.charge_code not in codes:
            raise UnknownCharge(
                f"plan {context.plan.code!r} has no charge {adjustment.charge_code!r} "
                f"(its charges: {', '.join(codes) or 'none'})"
            )
        values = {
            "invoice_id": invoice_id,
            "charge_code": adjustment.charge_code,
            "mode": adjustment.mode.value,
            "units": adjustment.units,
            "unit_amount": adjustment.unit_amount,
            "display_name": adjustment.display_name,
        }
        statement = dialect_insert(session, AdjustedFeeRow)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["invoice_id", "charge_code"],
                set_={
                    name: statement.excluded[name]
                    for name in ("mode", "units", "unit_amount", "display_name")
                },
            ),
            [values],
        )
        return _recompute_draft(session, row, context)


def remove_adjustment(engine: Engine, invoice_id: str, charge_code: str) -> Invoice:
    """Drop an operator's edit: the computed fee comes back. Idempotent."""
    with transaction(engine) as session:
        row = _lock(session, invoice_id)
        _require_draft(row)
        session.execute(
            delete(AdjustedFeeRow).where(
                AdjustedFeeRow.invoice_id == invoice_id, AdjustedFeeRow.charge_code == charge_code
            )
        )
        return _recompute_draft(session, row)


def list_adjustments(engine: Engine, invoice_id: str) -> list[AdjustedFee]:
    """The operator's edits stored for an invoice, by charge code."""
    with transaction(engine) as session:
        adjustments = _adjustments(session, invoice_id)
        return [adjustments[code] for code in sorted(adjustments)]


def finalize_invoice(engine: Engine, invoice_id: str, issued_at: datetime) -> FinalizationOutcome:
    """Finalize or close a draft, in one transaction; a repeat returns the stored outcome."""
    with transaction(engine) as session:
        row = _lock(session, invoice_id)
        if row.status != InvoiceStatus.DRAFT.value:
            return FinalizationOutcome(
                invoice=_invoice_model(session, row),
                delivery_ids=delivery_ids_of(session, invoice_id, INVOICE_CREATED),
            )
        context = load_context(session, row.subscription_external_id)
        customer, entity = context.customer, context.billing_entity
        fees = _compute(session, context, invoice_id, row.period_start, row.period_end)
        rate = tax_rate(customer, entity)

        if should_close(fees, entity, customer):
            totals = draft_totals(fees, rate, context.currency)
            _write_fees(session, invoice_id, totals.fees)
            session.execute(
                update(InvoiceRow)
                .where(InvoiceRow.id == invoice_id)
                .values(
                    status=InvoiceStatus.CLOSED.value,
                    number="",
                    issuing_date=issued_at,
                    tax_rate=rate,
                    updated_at=utcnow(),
                    **_totals_values(totals),
                )
            )
            return FinalizationOutcome(
                invoice=_invoice_model(session, _reload(session, invoice_id))
            )

        totals = finalization_totals(
            fees,
            _active_coupons(session, customer.external_id),
            rate,
            _wallet_balance(session, customer.external_id),
            context.currency,
        )
        _write_fees(session, invoice_id, totals.fees)
        _consume(session, invoice_id, customer.external_id, totals, issued_at)
        sequence = _next_number(session, entity.code)
        session.execute(
            update(InvoiceRow)
            .where(InvoiceRow.id == invoice_id)
            .values(
                status=InvoiceStatus.FINALIZED.value,
                number=final_number(entity.invoice_prefix, sequence),
                issuing_date=issued_at,
                tax_rate=rate,
                updated_at=utcnow(),
                **_totals_values(totals),
            )
        )
        invoice = _invoice_model(session, _reload(session, invoice_id))
        delivery_ids = queue_deliveries(session, invoice, INVOICE_CREATED, issued_at)
        return FinalizationOutcome(invoice=invoice, delivery_ids=delivery_ids)


def queue_drafted_webhook(engine: Engine, invoice_id: str) -> list[str]:
    """``invoice.drafted`` outbox rows, when the billing entity sends them; idempotent."""
    with transaction(engine) as session:
        row = _lock(session, invoice_id)
        context = load_context(session, row.subscription_external_id)
        if not context.billing_entity.send_invoice_drafted_webhook:
            return []
        existing = delivery_ids_of(session, invoice_id, INVOICE_DRAFTED)
        if existing or row.status != InvoiceStatus.DRAFT.value:
            return existing
        return queue_deliveries(session, _invoice_model(session, row), INVOICE_DRAFTED, utcnow())


def get_invoice(engine: Engine, invoice_id: str) -> Invoice:
    with transaction(engine) as session:
        row = session.get(InvoiceRow, invoice_id)
        if row is None:
            raise NotFound(f"invoice {invoice_id!r} does not exist")
        return _invoice_model(session, row)


def find_invoice(
    engine: Engine, subscription_external_id: str, period_start: datetime
) -> Invoice | None:
    with transaction(engine) as session:
        row = session.scalar(
            select(InvoiceRow).where(
                InvoiceRow.subscription_external_id == subscription_external_id,
                InvoiceRow.period_start == period_start,
            )
        )
        return None if row is None else _invoice_model(session, row)


def list_invoices(
    engine: Engine,
    *,
    customer_external_id: str | None = None,
    subscription_external_id: str | None = None,
    status: InvoiceStatus | str | None = None,
) -> list[Invoice]:
    """Invoices by period start, then subscription; filters combine."""
    with transaction(engine) as session:
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
            statement = statement.where(InvoiceRow.status == InvoiceStatus(status).value)
        return [_invoice_model(session, row) for row in session.scalars(statement).all()]
