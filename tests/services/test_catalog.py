"""Catalog loading: validated, idempotent, all or nothing, errors with the field's path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, text

from billing.errors import InvalidCatalog, NotFound
from services.catalog import (
    get_billing_context,
    list_subscriptions,
    load_catalog,
    load_catalog_file,
)
from services.coupons import get_wallet
from tests.fixtures.database import CATALOG_FILE

TABLES = (
    "billing_entities",
    "customers",
    "billable_metrics",
    "plans",
    "charges",
    "subscriptions",
    "coupons",
    "applied_coupons",
    "wallets",
    "wallet_transactions",
    "webhook_endpoints",
    "invoice_sequences",
)


def _example() -> dict[str, Any]:
    data = yaml.safe_load(CATALOG_FILE.read_text())
    assert isinstance(data, dict)
    return data


def _snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every catalog row except bookkeeping timestamps."""
    snapshot = {}
    with engine.connect() as connection:
        for table in TABLES:
            rows = connection.execute(text(f"SELECT * FROM {table}")).mappings()
            snapshot[table] = sorted(
                tuple(str(v) for k, v in row.items() if k not in {"created_at", "updated_at"})
                for row in rows
            )
    return snapshot


def test_example_catalog_loads_twice_with_the_same_result(catalog_engine: Engine) -> None:
    before = _snapshot(catalog_engine)
    report = load_catalog_file(catalog_engine, CATALOG_FILE)
    assert _snapshot(catalog_engine) == before
    assert (report.billing_entities, report.customers, report.plans) == (2, 6, 6)
    assert len(before["customers"]) == 6 and len(before["charges"]) == report.charges
    # Initial credits are granted once, however often the catalog is loaded.
    assert get_wallet(catalog_engine, "cust_northwind").balance_cents == 10_000


def test_example_catalog_covers_the_empty_invoice_settings(catalog_engine: Engine) -> None:
    settings = {
        sub.external_id: get_billing_context(catalog_engine, sub.external_id)
        for sub in list_subscriptions(catalog_engine)
    }
    zero = {c.customer.finalize_zero_amount_invoice.value for c in settings.values()}
    assert zero == {"inherit", "skip", "finalize"}
    assert len({c.timezone for c in settings.values()}) >= 3
    payg = settings["sub_koala_payg"]
    assert payg.plan.amount_cents == 0 and payg.customer.finalize_zero_amount_invoice == "skip"
    assert settings["sub_brandt_team"].currency == "EUR"
    assert settings["sub_brandt_team"].grace_period_days == 5
    assert settings["sub_koala_payg"].grace_period_days == 1


def test_webhook_secret_comes_from_the_environment(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_WEBHOOK_SECRET", "whsec_from_env")
    load_catalog_file(engine, CATALOG_FILE)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT secret FROM webhook_endpoints")).scalar() == (
            "whsec_from_env"
        )
    monkeypatch.delenv("BILLING_WEBHOOK_SECRET")
    load_catalog_file(engine, CATALOG_FILE)  # falls back to the demo default_secret
    with engine.connect() as connection:
        assert connection.execute(text("SELECT secret FROM webhook_endpoints")).scalar() == (
            "whsec_demo_only"
        )
    data = _example()
    del data["webhook_endpoints"][0]["default_secret"]
    with pytest.raises(
        InvalidCatalog, match=r"webhook_endpoints\[0\]\.secret_env: .*BILLING_WEBHOOK"
    ):
        load_catalog(engine, data)


def _broken(mutate: Any) -> dict[str, Any]:
    data = copy.deepcopy(_example())
    mutate(data)
    return data


def _gap_in_tiers(data: dict[str, Any]) -> None:
    data["plans"][0]["charges"][1]["properties"]["graduated_ranges"][2]["from_value"] = 2000


BROKEN = [
    pytest.param(
        _gap_in_tiers,
        r"^plans\[0\]\.charges\[1\]\.properties\.graduated_ranges\[2\]\.from_value: tiers leave a gap",
        id="tier-gap",
    ),
    pytest.param(
        lambda d: d["customers"][2].update(billing_entity_code="acme_mars"),
        r"^customers\[2\]\.billing_entity_code: unknown billing entity 'acme_mars'",
        id="unknown-entity",
    ),
    pytest.param(
        lambda d: d["subscriptions"][1].update(plan_code="platinum"),
        r"^subscriptions\[1\]\.plan_code: unknown plan 'platinum'",
        id="unknown-plan",
    ),
    pytest.param(
        lambda d: d["plans"][2]["charges"][0].update(billable_metric_code="nope"),
        r"^plans\[2\]\.charges\[0\]\.billable_metric_code: unknown billable metric 'nope'",
        id="unknown-metric",
    ),
    pytest.param(
        lambda d: d["billable_metrics"][1].pop("field_name"),
        r"^billable_metrics\[1\]: .*needs a field_name",
        id="missing-field-name",
    ),
    pytest.param(
        lambda d: d["customers"][0].update(timezone="Mars/Olympus"),
        r"^customers\[0\]\.timezone: unknown timezone 'Mars/Olympus'",
        id="bad-timezone",
    ),
    pytest.param(
        lambda d: d["billing_entities"][1].update(currency="euro"),
        r"^billing_entities\[1\]\.currency: ",
        id="bad-currency",
    ),
    pytest.param(
        lambda d: d.update(invoices=[]),
        r"^invoices: unknown section",
        id="unknown-section",
    ),
]


@pytest.mark.parametrize(("mutate", "message"), BROKEN)
def test_a_broken_catalog_names_the_field_and_writes_nothing(
    engine: Engine, mutate: Any, message: str
) -> None:
    with pytest.raises(InvalidCatalog, match=message):
        load_catalog(engine, _broken(mutate))
    assert all(rows == [] for rows in _snapshot(engine).values())


def test_a_reference_failing_late_rolls_back_the_whole_load(catalog_engine: Engine) -> None:
    before = _snapshot(catalog_engine)
    data = {
        "customers": [{"external_id": "cust_new", "billing_entity_code": "acme_us", "name": "New"}],
        "subscriptions": [
            {
                "external_id": "sub_new",
                "customer_external_id": "cust_new",
                "plan_code": "does_not_exist",
                "started_at": "2026-01-01T00:00:00Z",
            }
        ],
    }
    with pytest.raises(InvalidCatalog, match=r"subscriptions\[0\]\.plan_code"):
        load_catalog(catalog_engine, data)
    assert _snapshot(catalog_engine) == before
    with pytest.raises(NotFound):
        get_billing_context(catalog_engine, "sub_new")


def test_a_partial_catalog_may_reference_stored_items(catalog_engine: Engine) -> None:
    load_catalog(
        catalog_engine,
        {
            "customers": [{"external_id": "cust_new", "billing_entity_code": "acme_eu"}],
            "subscriptions": [
                {
                    "external_id": "sub_new",
                    "customer_external_id": "cust_new",
                    "plan_code": "team",
                    "started_at": "2026-01-01T00:00:00Z",
                }
            ],
        },
    )
    context = get_billing_context(catalog_engine, "sub_new")
    assert (context.timezone, context.currency, context.plan.code) == (
        "Europe/Berlin",
        "EUR",
        "team",
    )


def test_invalid_yaml_is_an_invalid_catalog(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("plans: [\n")
    with pytest.raises(InvalidCatalog, match="not valid YAML"):
        load_catalog_file(engine, path)
