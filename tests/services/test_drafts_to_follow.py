"""Drafts that follow a changed grace period, found in the store with their workflow id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy

from billing.timeline import TimelineKind
from services.catalog import load_catalog
from services.grace_periods import drafts_to_follow_settings, recompute_grace_period
from services.invoices import create_draft
from services.timeline import invoice_timeline
from tests.services.support import january

SAKURA = {  # cust_sakura of examples/catalog.yaml (Asia/Tokyo), now with 1 day of grace
    "external_id": "cust_sakura",
    "billing_entity_code": "acme_us",
    "name": "Sakura Analytics K.K.",
    "timezone": "Asia/Tokyo",
    "finalize_zero_amount_invoice": "finalize",
    "grace_period_days": 1,
}


def test_a_shorter_grace_period_finds_the_draft_with_its_local_workflow_id(
    catalog_engine: sqlalchemy.Engine,
) -> None:
    start, end = january("Asia/Tokyo")  # 2025-12-31T15:00Z: the 1st of January in Tokyo
    drafted_at = datetime(2026, 2, 1, 12, tzinfo=UTC)
    draft = create_draft(catalog_engine, "sub_sakura_starter", start, end, drafted_at=drafted_at)
    assert draft.expected_finalization_at == drafted_at + timedelta(days=3)  # acme_us's
    assert drafts_to_follow_settings(catalog_engine) == []

    load_catalog(catalog_engine, {"customers": [SAKURA]})
    [found] = drafts_to_follow_settings(catalog_engine)
    assert found.invoice_id == draft.id
    assert found.workflow_id == "billing-period/sub_sakura_starter/2026-01-01"  # not 12-31
    assert found.follows_at == drafted_at + timedelta(days=1)

    moved = recompute_grace_period(catalog_engine, draft.id, actor="ops")
    assert moved.expected_finalization_at == drafted_at + timedelta(days=1)
    assert drafts_to_follow_settings(catalog_engine) == []  # followed: nothing left
    changed = [
        e for e in invoice_timeline(catalog_engine, draft.id)
        if e.kind == TimelineKind.GRACE_PERIOD_CHANGED
    ]  # fmt: skip
    assert [e.actor for e in changed] == ["ops"]
