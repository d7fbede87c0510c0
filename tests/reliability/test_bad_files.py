"""Broken catalogs (each an InvalidCatalog naming the path, nothing written) and malformed
JSONL usage files (``billing usage send --file``: every bad line reported, exit code 1)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from billing.errors import InvalidCatalog
from services.catalog import load_catalog
from store.db import make_engine, upgrade
from tests.fixtures.periods import period_catalog
from tests.reliability.support import free_port

pytestmark = [pytest.mark.fault]

ROOT = Path(__file__).resolve().parents[2]
BILLING = Path(sys.executable).with_name("billing")
CATALOG_TABLES = (
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
)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path_factory.mktemp('catalog') / 'billing.db'}"
    upgrade(url)
    engine = make_engine(url)
    load_catalog(engine, period_catalog("http://127.0.0.1:9/hook"))
    yield engine
    engine.dispose()


def _catalog_state(engine: Engine) -> dict[str, list[Any]]:
    with engine.connect() as connection:
        return {
            table: sorted(map(repr, connection.execute(text(f"SELECT * FROM {table}")).all()))
            for table in CATALOG_TABLES
        }


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(catalog: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = catalog
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return mutate


def _add_plan_charge(properties: dict[str, Any], model: str) -> Callable[[dict[str, Any]], None]:
    def mutate(catalog: dict[str, Any]) -> None:
        catalog["plans"][0]["amount_cents"] = 12345  # would change if anything were written
        catalog["plans"][0]["charges"].append(
            {"billable_metric_code": "seats", "charge_model": model, "properties": properties}
        )

    return mutate


GRADUATED_GAP = {
    "graduated_ranges": [
        {"from_value": 0, "to_value": 10, "per_unit_amount": "1", "flat_amount": "0"},
        {"from_value": 50, "to_value": None, "per_unit_amount": "1", "flat_amount": "0"},
    ]
}

BROKEN: list[Any] = [
    pytest.param(
        _set("billing_entities.0.timezone", "Mars/Olympus"), "billing_entities[0]", id="tz"
    ),
    pytest.param(_set("billing_entities.0.currency", 7), "billing_entities[0]", id="currency-type"),
    pytest.param(_set("customers.0.billing_entity_code", "nowhere"), "customers[0]", id="ref"),
    pytest.param(_set("plans.0.amount_cents", -1), "plans[0]", id="negative-fee"),
    pytest.param(_set("plans.0.amount_cents", "lots"), "plans[0]", id="fee-type"),
    pytest.param(_set("plans.0.charges.0.charge_model", "magic"), "plans[0]", id="model"),
    pytest.param(
        _set("plans.0.charges.0.properties", {"amount": "NaN"}), "plans[0]", id="nan-amount"
    ),
    pytest.param(
        _set("plans.0.charges.0.properties", {"amount": "-1"}), "plans[0]", id="neg-amount"
    ),
    pytest.param(_add_plan_charge(GRADUATED_GAP, "graduated"), "plans[0]", id="tier-gap"),
    pytest.param(_set("subscriptions.0.plan_code", "nope"), "subscriptions[0]", id="plan-ref"),
    pytest.param(_set("subscriptions.0.started_at", "soon"), "subscriptions[0]", id="date"),
    pytest.param(_set("billable_metrics.1.field_name", None), "billable_metrics[1]", id="field"),
    pytest.param(
        _set("billable_metrics.0.aggregation_type", "median"), "billable_metrics[0]", id="agg"
    ),
    pytest.param(_set("coupons.0.amount_cents", -100), "coupons[0]", id="coupon"),
    pytest.param(_set("webhook_endpoints.0.url", "not a url"), "webhook_endpoints[0]", id="url"),
    pytest.param(_set("plans", {"code": "x"}), "plans", id="section-type"),
    pytest.param(_set("customers.1", "a string"), "customers[1]", id="item-type"),
    pytest.param(_set("surprise", []), "surprise", id="unknown-section"),
]


@pytest.mark.parametrize(("mutate", "path"), BROKEN)
def test_broken_catalog_names_the_path_and_writes_nothing(
    loaded: Engine, mutate: Callable[[dict[str, Any]], None], path: str
) -> None:
    before = _catalog_state(loaded)
    catalog = copy.deepcopy(period_catalog("http://127.0.0.1:9/hook"))
    catalog["customers"].append(  # a valid new item, which must not be written either
        {"external_id": "cust_new", "billing_entity_code": "acme", "name": "New"}
    )
    mutate(catalog)
    with pytest.raises(InvalidCatalog) as error:
        load_catalog(loaded, catalog)
    assert path in str(error.value)
    assert _catalog_state(loaded) == before


def test_usage_send_reports_every_malformed_jsonl_line(tmp_path: Path) -> None:
    lines = [
        "{not json",
        json.dumps({"transaction_id": "a"}),
        json.dumps(
            {
                "transaction_id": "b",
                "external_subscription_id": "sub_pro",
                "code": "api_calls",
                "timestamp": "2026-01-10T12:00:00",  # no time zone
            }
        ),
        "[1, 2, 3]",
        "",
        json.dumps(
            {
                "transaction_id": "c",
                "external_subscription_id": "sub_pro",
                "code": "storage_gb",
                "timestamp": "2026-01-10T12:00:00Z",
                "properties": {"gb": float("nan")},
            }
        ),
        "null",
        "\u00ff\u00fe garbage",
    ]
    file = tmp_path / "usage.jsonl"
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "BILLING_"))}
    env |= {
        "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'billing.db'}",
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # nothing listens: nothing is sent
        "BILLING_DATA_DIR": str(tmp_path / "data"),
    }
    result = subprocess.run(
        [str(BILLING), "usage", "send", "--file", str(file), "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["accepted"] == 0
    malformed = report["malformed"]
    numbers = [int(m.split(":")[0].removeprefix("line ")) for m in malformed]
    assert numbers == [1, 2, 3, 4, 6, 7, 8], malformed
    assert "Traceback" not in result.stderr
