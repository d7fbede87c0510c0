"""Catalog changes reach a running draft: tax rate and approval rules at its next refresh,
and every setting (the empty-invoice rule included) always at finalization, since
finalization reads the settings of that moment, not those of the draft's creation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import yaml
from sqlalchemy import Engine

from billing.approval import ApprovalStatus
from billing.models import InvoiceStatus
from services.catalog import load_catalog
from services.finalization import finalize_invoice
from services.invoices import create_draft, refresh_draft
from tests.fixtures.database import CATALOG_FILE
from tests.services.support import january

BRANDT_TEAM = "sub_brandt_team"  # acme_eu: 19 % tax
BRANDT_PAYG = "sub_brandt_payg"  # usage only; acme_eu closes empty invoices
ISSUED_AT = datetime(2026, 2, 4, 5, tzinfo=UTC)


def _catalog() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CATALOG_FILE.read_text(encoding="utf-8"))
    return data


def _entity(catalog: dict[str, Any], code: str) -> dict[str, Any]:
    return next(e for e in catalog["billing_entities"] if e["code"] == code)


def _customer(catalog: dict[str, Any], external_id: str) -> dict[str, Any]:
    return next(c for c in catalog["customers"] if c["external_id"] == external_id)


def test_a_new_tax_rate_and_approval_rule_reach_the_draft_at_its_next_refresh(
    catalog_engine: Engine,
) -> None:
    start, end = january("Europe/Berlin")
    draft = create_draft(catalog_engine, BRANDT_TEAM, start, end)
    before = draft.taxes_amount_cents
    assert before > 0

    catalog = _catalog()
    _entity(catalog, "acme_eu")["tax_rate"] = "10"
    _entity(catalog, "acme_eu")["approval"] = {"always": True}
    load_catalog(catalog_engine, catalog)

    refreshed = refresh_draft(catalog_engine, draft.id).invoice
    assert refreshed.taxes_amount_cents < before
    assert refreshed.taxes_amount_cents == round(
        refreshed.sub_total_excluding_taxes_amount_cents / 10
    )

    outcome = finalize_invoice(catalog_engine, draft.id, ISSUED_AT)
    assert outcome.held and outcome.invoice.status == InvoiceStatus.DRAFT
    assert outcome.invoice.approval is not None
    assert outcome.invoice.approval.status == ApprovalStatus.REQUIRED


def test_finalization_reads_the_settings_of_its_moment_without_a_refresh(
    catalog_engine: Engine,
) -> None:
    start, end = january("Europe/Berlin")
    team = create_draft(catalog_engine, BRANDT_TEAM, start, end)
    payg = create_draft(catalog_engine, BRANDT_PAYG, start, end)
    assert payg.total_amount_cents == 0  # empty: acme_eu would close it

    catalog = _catalog()
    _entity(catalog, "acme_eu")["tax_rate"] = "0"
    _customer(catalog, "cust_brandt")["finalize_zero_amount_invoice"] = "finalize"
    load_catalog(catalog_engine, catalog)

    final = finalize_invoice(catalog_engine, team.id, ISSUED_AT).invoice
    assert final.status == InvoiceStatus.FINALIZED
    assert final.taxes_amount_cents == 0
    assert final.total_amount_cents == final.sub_total_excluding_taxes_amount_cents

    empty = finalize_invoice(catalog_engine, payg.id, ISSUED_AT).invoice
    assert empty.status == InvoiceStatus.FINALIZED and empty.number  # not closed any more
