"""Approval holds in finalization: the rules, the customer's replacing the entity's, the
held draft, and the approval that finalizes it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine

from billing.approval import ApprovalStatus
from billing.models import InvoiceStatus
from billing.timeline import TimelineKind
from services.catalog import load_catalog
from services.coupons import get_wallet
from services.finalization import Approval, FinalizationOutcome, finalize_invoice
from services.invoices import DraftOutcome, create_draft, get_invoice
from services.timeline import invoice_timeline
from services.webhooks import list_deliveries
from tests.services.support import draft_at_once, entry, example_catalog, february, january

NORTHWIND = "sub_northwind_growth"  # acme_us; January: 29,900 - 5,000 coupon - 10,000 credits
KOALA_PAYG = "sub_koala_payg"  # usage only, the customer says skip empty invoices
ISSUED_AT = datetime(2026, 2, 4, 5, tzinfo=UTC)
APPROVED_AT = datetime(2026, 2, 5, 9, tzinfo=UTC)


def _rules(
    engine: Engine,
    entity: dict[str, Any] | None = None,
    customer: dict[str, Any] | None = None,
    customer_id: str = "cust_northwind",
) -> None:
    """Load the example catalog with approval rules on acme_us and/or a customer."""
    catalog = example_catalog()
    if entity is not None:
        entry(catalog, "billing_entities", "code", "acme_us")["approval"] = entity
    if customer is not None:
        entry(catalog, "customers", "external_id", customer_id)["approval"] = customer
    load_catalog(engine, catalog)


def _january(engine: Engine) -> str:
    return create_draft(engine, NORTHWIND, *january("America/New_York")).id


def _kinds(engine: Engine, invoice_id: str) -> list[TimelineKind]:
    return [e.kind for e in invoice_timeline(engine, invoice_id)]


def test_a_held_invoice_stays_a_draft_until_approved(catalog_engine: Engine) -> None:
    _rules(catalog_engine, entity={"total_above_cents": 10_000})
    invoice_id = _january(catalog_engine)

    held = finalize_invoice(catalog_engine, invoice_id, ISSUED_AT, actor="bob")
    assert held.held and held.auto_approve_after_hours is None
    invoice = held.invoice
    assert (invoice.status, invoice.number) == (InvoiceStatus.DRAFT, "ACME-DRAFT")
    assert invoice.approval is not None
    assert invoice.approval.status == ApprovalStatus.REQUIRED
    assert invoice.approval.reasons == ("total 14900 cents is above 10000 cents",)
    assert get_invoice(catalog_engine, invoice_id) == invoice
    # The approval_required outbox row; nothing consumed.
    (delivery,) = list_deliveries(catalog_engine, invoice_id=invoice_id)
    assert delivery.webhook_type == "invoice.approval_required"
    assert held.delivery_ids == [delivery.id]
    assert get_wallet(catalog_engine, "cust_northwind").balance_cents == 10_000
    # Asking again leaves it held, records nothing more.
    assert finalize_invoice(catalog_engine, invoice_id, APPROVED_AT) == held
    assert _kinds(catalog_engine, invoice_id).count(TimelineKind.APPROVAL_REQUIRED) == 1

    approval = Approval(approved_by="alice", note="checked with the account manager")
    final = finalize_invoice(
        catalog_engine, invoice_id, APPROVED_AT, approval=approval, actor="alice"
    ).invoice
    assert (final.status, final.number, final.total_amount_cents) == (
        InvoiceStatus.FINALIZED,
        "ACME-000001",
        14_900,
    )
    assert final.approval is not None
    assert final.approval.model_dump() == {
        "status": ApprovalStatus.APPROVED,
        "reasons": ("total 14900 cents is above 10000 cents",),
        "approved_by": "alice",
        "approved_at": APPROVED_AT,
        "note": "checked with the account manager",
    }
    assert get_invoice(catalog_engine, invoice_id).approval == final.approval
    assert [d.webhook_type for d in list_deliveries(catalog_engine, invoice_id=invoice_id)] == [
        "invoice.approval_required",
        "invoice.created",
    ]
    timeline = invoice_timeline(catalog_engine, invoice_id)
    assert [(e.kind, e.actor) for e in timeline][-3:] == [
        (TimelineKind.APPROVAL_REQUIRED, "bob"),
        (TimelineKind.APPROVED, "alice"),
        (TimelineKind.FINALIZED, "alice"),
    ]


@pytest.mark.parametrize(
    ("rules", "held"),
    [
        ({"total_above_cents": 14_900}, False),  # not above: equal
        ({"total_above_cents": 14_899}, True),
        ({"always": True}, True),
        ({"always": False}, False),
        ({"change_above_percent": "0"}, False),  # no previous invoice: never matches
        ({}, False),
    ],
)
def test_each_rule_against_the_would_be_invoice(
    catalog_engine: Engine, rules: dict[str, Any], held: bool
) -> None:
    _rules(catalog_engine, entity=rules)
    outcome = finalize_invoice(catalog_engine, _january(catalog_engine), ISSUED_AT)
    assert outcome.held is held
    assert outcome.invoice.approval is not None
    expected = ApprovalStatus.REQUIRED if held else ApprovalStatus.NOT_REQUIRED
    assert outcome.invoice.approval.status == expected
    if not held:
        assert outcome.invoice.status == InvoiceStatus.FINALIZED


def test_change_above_percent_compares_with_the_previous_finalized_invoice(
    catalog_engine: Engine,
) -> None:
    _rules(catalog_engine, entity={"change_above_percent": "50"})
    january_outcome = finalize_invoice(catalog_engine, _january(catalog_engine), ISSUED_AT)
    assert not january_outcome.held  # no previous invoice
    assert january_outcome.invoice.total_amount_cents == 14_900
    # February: the one-off coupon and the credits are used up, 29,900 is +100.67%.
    february_id = create_draft(catalog_engine, NORTHWIND, *february("America/New_York")).id
    outcome = finalize_invoice(catalog_engine, february_id, datetime(2026, 3, 4, tzinfo=UTC))
    assert outcome.held
    assert outcome.invoice.approval is not None
    assert outcome.invoice.approval.reasons == (
        "total changed by 100.67% from the previous invoice (14900 cents)",
    )


def test_the_customers_rules_replace_the_entitys(catalog_engine: Engine) -> None:
    # The entity holds everything; Northwind's own rule only totals above $1,000.
    _rules(catalog_engine, entity={"always": True}, customer={"total_above_cents": 100_000})
    outcome = finalize_invoice(catalog_engine, _january(catalog_engine), ISSUED_AT)
    assert not outcome.held and outcome.invoice.status == InvoiceStatus.FINALIZED
    # Sakura (same entity, no rules of its own) is held by the entity's.
    sakura = create_draft(catalog_engine, "sub_sakura_starter", *january("Asia/Tokyo"))
    assert finalize_invoice(catalog_engine, sakura.id, ISSUED_AT).held


def test_an_invoice_that_closes_is_never_held(catalog_engine: Engine) -> None:
    _rules(catalog_engine, entity={"always": True})
    draft = create_draft(catalog_engine, KOALA_PAYG, *january("Australia/Sydney"))
    outcome = finalize_invoice(catalog_engine, draft.id, ISSUED_AT)
    assert not outcome.held and outcome.invoice.status == InvoiceStatus.CLOSED
    assert outcome.invoice.approval is not None
    assert outcome.invoice.approval.status == ApprovalStatus.NOT_REQUIRED


def test_approving_an_invoice_that_needs_no_approval_finalizes_it(catalog_engine: Engine) -> None:
    _rules(catalog_engine, entity={"total_above_cents": 100_000})
    outcome = finalize_invoice(
        catalog_engine, _january(catalog_engine), ISSUED_AT, approval=Approval(approved_by="al")
    )
    assert isinstance(outcome, FinalizationOutcome) and not outcome.held
    assert outcome.invoice.status == InvoiceStatus.FINALIZED
    assert outcome.invoice.approval is not None
    assert outcome.invoice.approval.status == ApprovalStatus.NOT_REQUIRED
    assert TimelineKind.APPROVED not in _kinds(catalog_engine, outcome.invoice.id)


def test_an_approval_given_before_the_hold_records_what_it_overrode(
    catalog_engine: Engine,
) -> None:
    _rules(catalog_engine, entity={"always": True})
    outcome = finalize_invoice(
        catalog_engine,
        _january(catalog_engine),
        ISSUED_AT,
        approval=Approval(approved_by="dan"),
        actor="dan",
    )
    assert outcome.invoice.status == InvoiceStatus.FINALIZED
    assert outcome.invoice.approval is not None
    assert outcome.invoice.approval.status == ApprovalStatus.APPROVED
    assert outcome.invoice.approval.reasons == ("every invoice needs approval",)
    assert outcome.invoice.approval.approved_by == "dan"


def test_a_grace_period_of_zero_is_held_by_the_draft_step(catalog_engine: Engine) -> None:
    """The period-end step holds the draft as finalizing it would, keeps its preview, and
    run again holds nothing twice."""
    _rules(catalog_engine, entity={"total_above_cents": 10_000})
    start, end = january("America/New_York")

    def step() -> DraftOutcome:
        return draft_at_once(catalog_engine, NORTHWIND, (start, end), ISSUED_AT)

    outcome = step()
    assert outcome.finalization is not None and outcome.finalization.held
    held = outcome.finalization.invoice
    assert (held.status, held.number) == (InvoiceStatus.DRAFT, "ACME-DRAFT")
    assert outcome.preview is not None and outcome.preview.total_amount_cents == 14_900
    assert get_wallet(catalog_engine, "cust_northwind").balance_cents == 10_000
    again = step()
    assert again.finalization == outcome.finalization
    assert _kinds(catalog_engine, held.id).count(TimelineKind.APPROVAL_REQUIRED) == 1
    kinds = [d.webhook_type for d in list_deliveries(catalog_engine, invoice_id=held.id)]
    assert kinds.count("invoice.approval_required") == 1
