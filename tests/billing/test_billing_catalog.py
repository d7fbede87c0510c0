"""A catalog document, checked without a database: parse, references, secrets."""

from __future__ import annotations

from typing import Any

import pytest

from billing.catalog import (
    CatalogReferences,
    StoredCatalog,
    check_catalog,
    parse_catalog,
    references,
)
from billing.errors import InvalidCatalog
from billing.models import AggregationType, BillableMetric

PARTIAL: dict[str, Any] = {
    "plans": [
        {
            "code": "lite",
            "charges": [
                {
                    "billable_metric_code": "calls",
                    "charge_model": "standard",
                    "properties": {"amount": "1"},
                }
            ],
        }
    ],
    "subscriptions": [
        {
            "external_id": "s",
            "customer_external_id": "c",
            "plan_code": "lite",
            "started_at": "2026-01-01T00:00:00Z",
        }
    ],
    "webhook_endpoints": [
        {"code": "main", "url": "https://example.test/hooks", "secret_env": "HOOK_SECRET"}
    ],
}
CALLS = BillableMetric(code="calls", aggregation_type=AggregationType.COUNT)


def test_references_are_what_the_catalog_uses_but_does_not_define() -> None:
    assert references(parse_catalog(PARTIAL)) == CatalogReferences(
        customers=frozenset({"c"}), billable_metrics=frozenset({"calls"})
    )


def test_a_partial_catalog_passes_when_the_store_has_its_references() -> None:
    stored = StoredCatalog(customers=frozenset({"c"}), billable_metrics={"calls": CALLS})
    check_catalog(parse_catalog(PARTIAL), stored, {"HOOK_SECRET": "s3cret"})


def test_a_missing_reference_names_the_field() -> None:
    stored = StoredCatalog(billable_metrics={"calls": CALLS})
    with pytest.raises(InvalidCatalog, match=r"^subscriptions\[0\]\.customer_external_id: "):
        check_catalog(parse_catalog(PARTIAL), stored, {"HOOK_SECRET": "s3cret"})


def test_a_secret_comes_from_the_given_environment() -> None:
    stored = StoredCatalog(customers=frozenset({"c"}), billable_metrics={"calls": CALLS})
    with pytest.raises(InvalidCatalog, match=r"webhook_endpoints\[0\]\.secret_env: .*HOOK_SECRET"):
        check_catalog(parse_catalog(PARTIAL), stored, {})
    endpoint = parse_catalog(PARTIAL).webhook_endpoints[0]
    assert endpoint.resolve_secret({"HOOK_SECRET": "s3cret"}) == "s3cret"


def test_the_report_counts_every_section_and_the_charges() -> None:
    report = parse_catalog(PARTIAL).report()
    assert (report.plans, report.charges, report.subscriptions, report.customers) == (1, 1, 1, 0)
