"""The catalog repository: billing entities, customers, metrics, plans, subscriptions,
coupons and webhook endpoints, written from a checked :class:`billing.catalog.Catalog`
and read back as domain models.

Writing is an idempotent upsert, so the same catalog can be loaded on every deploy.
Wallets and applied coupons of a catalog go through :mod:`store.coupons`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Row, Table, bindparam, delete, select
from sqlalchemy.orm import Session

from billing.catalog import Catalog, CatalogReferences, StoredCatalog
from billing.errors import NotFound
from billing.models import BillingContext, Coupon, Subscription
from billing.periods import resolve_grace_period_days, resolve_timezone
from store._rows import (
    coupon_model,
    customer_model,
    dialect_insert,
    entity_model,
    metric_model,
    plan_model,
    subscription_model,
    table_of,
    upsert,
)
from store.schema import (
    BillableMetricRow,
    BillingEntityRow,
    ChargeRow,
    CouponRow,
    CustomerRow,
    InvoiceSequenceRow,
    PlanRow,
    SubscriptionRow,
    WebhookEndpointRow,
)

__all__ = ["CatalogRepository"]


def _json_or_none(model: BaseModel | None) -> dict[str, Any] | None:
    """A nested model as a JSON column's value (decimals as text, unset fields left out)."""
    return None if model is None else model.model_dump(mode="json", exclude_none=True)


# Core statements built once, bound per call: no ORM instances are made (most operations
# load the context, so the identity map and instance state machinery would be paid every
# time) and no statement is rebuilt or re-keyed for the compiled cache.
_SUBSCRIPTIONS = table_of(SubscriptionRow)
_CUSTOMERS = table_of(CustomerRow)
_ENTITIES = table_of(BillingEntityRow)
_PLANS = table_of(PlanRow)
_CHARGES = table_of(ChargeRow)
_METRICS = table_of(BillableMetricRow)
_COUPONS = table_of(CouponRow)


def _columns(*tables: Table) -> list[Any]:
    return [column for table in tables for column in table.c]


def _split(row: Sequence[Any], tables: Sequence[Table], start: int = 0) -> list[dict[str, Any]]:
    """A joined row's values, table by table (the tables' columns in select order, from
    column ``start``)."""
    values = []
    for table in tables:
        names = table.c.keys()
        values.append(dict(zip(names, row[start : start + len(names)], strict=True)))
        start += len(names)
    return values


# One row per charge of the plan (one row with NULL charge columns when it has none).
# The metric joins LEFT too: its foreign key means every charge has one.
_HEADER_TABLES = (_SUBSCRIPTIONS, _CUSTOMERS, _ENTITIES, _PLANS)
_CHARGE_TABLES = (_CHARGES, _METRICS)
_CHARGES_START = len(_columns(*_HEADER_TABLES))
_CHARGE_CODE = _CHARGES_START + _CHARGES.c.keys().index("code")  # NULL: no charge
_SELECT_CONTEXTS = (
    select(*_columns(*_HEADER_TABLES, *_CHARGE_TABLES))
    .join(_CUSTOMERS, _CUSTOMERS.c.external_id == _SUBSCRIPTIONS.c.customer_external_id)
    .join(_ENTITIES, _ENTITIES.c.code == _CUSTOMERS.c.billing_entity_code)
    .join(_PLANS, _PLANS.c.code == _SUBSCRIPTIONS.c.plan_code)
    .outerjoin(_CHARGES, _CHARGES.c.plan_code == _PLANS.c.code)
    .outerjoin(_METRICS, _METRICS.c.code == _CHARGES.c.billable_metric_code)
)
_SELECT_CONTEXT = _SELECT_CONTEXTS.where(
    _SUBSCRIPTIONS.c.external_id == bindparam("subscription_external_id")
).order_by(_CHARGES.c.position)
_SUBSCRIPTION_ID = _SUBSCRIPTIONS.c.keys().index(
    "external_id"
)  # the first table's columns come first


def _context(rows: Sequence[Row[Any]]) -> BillingContext:
    """One subscription's context from its rows of ``_SELECT_CONTEXTS`` (one per charge)."""
    subscription, customer_row, entity_row, plan_row = _split(rows[0], _HEADER_TABLES)
    charged = [
        _split(row, _CHARGE_TABLES, _CHARGES_START) for row in rows if row[_CHARGE_CODE] is not None
    ]
    plan = plan_model(plan_row, [charge for charge, _ in charged])
    metrics = {metric["code"]: metric for _, metric in charged}.values()
    customer = customer_model(customer_row)
    entity = entity_model(entity_row)
    return BillingContext(
        subscription=subscription_model(subscription),
        customer=customer,
        billing_entity=entity,
        plan=plan,
        metrics={row["code"]: metric_model(row) for row in metrics},
        timezone=resolve_timezone(customer, entity),
        grace_period_days=resolve_grace_period_days(customer, entity),
        currency=entity.currency,
    )


class CatalogRepository:
    """The catalog inside one unit of work."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def billing_context(self, subscription_external_id: str) -> BillingContext:
        """The subscription with its customer, billing entity, plan and metrics.

        One statement (most operations load it, so round trips count): the subscription
        with its customer, billing entity and plan, joined to the plan's charges with
        their billable metrics in plan order.
        """
        rows = self._session.execute(
            _SELECT_CONTEXT, {"subscription_external_id": subscription_external_id}
        ).all()
        if not rows:
            raise NotFound(f"subscription {subscription_external_id!r} does not exist")
        return _context(rows)

    def billing_contexts(
        self, subscription_external_ids: Sequence[str]
    ) -> dict[str, BillingContext]:
        """The billing contexts of these subscriptions (the unknown ones left out), in
        one statement: for the commands that handle many subscriptions at once."""
        rows = self._session.execute(
            _SELECT_CONTEXTS.where(
                _SUBSCRIPTIONS.c.external_id.in_(subscription_external_ids)
            ).order_by(_SUBSCRIPTIONS.c.external_id, _CHARGES.c.position)
        ).all()
        by_subscription: dict[str, list[Row[Any]]] = {}
        for row in rows:
            by_subscription.setdefault(row[_SUBSCRIPTION_ID], []).append(row)
        return {key: _context(found) for key, found in by_subscription.items()}

    def sends_drafted_webhook(self, billing_entity_code: str) -> bool:
        """Whether the billing entity sends ``invoice.drafted`` (one column, no context)."""
        return bool(
            self._session.scalar(
                select(BillingEntityRow.send_invoice_drafted_webhook).where(
                    BillingEntityRow.code == billing_entity_code
                )
            )
        )

    def list_subscriptions(self) -> list[Subscription]:
        """All subscriptions, by external id."""
        rows = self._session.execute(select(_SUBSCRIPTIONS).order_by(_SUBSCRIPTIONS.c.external_id))
        return [subscription_model(row._mapping) for row in rows]

    def get_coupon(self, coupon_code: str) -> Coupon:
        row = self._session.execute(
            select(_COUPONS).where(_COUPONS.c.code == coupon_code)
        ).one_or_none()
        if row is None:
            raise NotFound(f"coupon {coupon_code!r} does not exist")
        return coupon_model(row._mapping)

    def require_customer(self, customer_external_id: str) -> None:
        """Raise :class:`NotFound` unless the customer exists."""
        found = self._session.scalar(
            select(_CUSTOMERS.c.external_id).where(_CUSTOMERS.c.external_id == customer_external_id)
        )
        if found is None:
            raise NotFound(f"customer {customer_external_id!r} does not exist")

    def stored(self, wanted: CatalogReferences) -> StoredCatalog:
        """Which of the ``wanted`` codes the store has."""
        return StoredCatalog(
            billing_entities=self._existing(BillingEntityRow.code, wanted.billing_entities),
            customers=self._existing(CustomerRow.external_id, wanted.customers),
            billable_metrics={
                row.code: metric_model(row._mapping)
                for row in self._session.execute(
                    select(_METRICS).where(_METRICS.c.code.in_(wanted.billable_metrics))
                )
            },
            plans=self._existing(PlanRow.code, wanted.plans),
            coupons=self._existing(CouponRow.code, wanted.coupons),
        )

    def _existing(self, column: Any, wanted: frozenset[str]) -> frozenset[str]:
        if not wanted:
            return frozenset()
        return frozenset(self._session.scalars(select(column).where(column.in_(wanted))).all())

    def save(self, catalog: Catalog, secrets: Mapping[str, str | None]) -> None:
        """Upsert every section but wallets and applied coupons; ``secrets`` by endpoint."""
        session = self._session
        upsert(
            session,
            BillingEntityRow,
            [
                {**entity.model_dump(), "approval": _json_or_none(entity.approval)}
                for entity in catalog.billing_entities
            ],
            ["code"],
        )
        if catalog.billing_entities:
            sequences = dialect_insert(session, InvoiceSequenceRow).on_conflict_do_nothing(
                index_elements=["billing_entity_code"]
            )
            session.execute(
                sequences,
                [
                    {"billing_entity_code": e.code, "last_number": 0}
                    for e in catalog.billing_entities
                ],
            )
        upsert(
            session,
            BillableMetricRow,
            [metric.model_dump(mode="json") for metric in catalog.billable_metrics],
            ["code"],
        )
        for plan in catalog.plans:
            upsert(session, PlanRow, [plan.model_dump(mode="json", exclude={"charges"})], ["code"])
            codes = [charge.code for charge in plan.charges]
            session.execute(
                delete(ChargeRow).where(
                    ChargeRow.plan_code == plan.code, ChargeRow.code.not_in(codes)
                )
            )
            upsert(
                session,
                ChargeRow,
                [
                    {"plan_code": plan.code, "position": position, **charge.model_dump(mode="json")}
                    for position, charge in enumerate(plan.charges)
                ],
                ["plan_code", "code"],
            )
        upsert(
            session,
            CustomerRow,
            [
                {
                    **customer.model_dump(),
                    "finalize_zero_amount_invoice": customer.finalize_zero_amount_invoice.value,
                    "approval": _json_or_none(customer.approval),
                }
                for customer in catalog.customers
            ],
            ["external_id"],
        )
        upsert(
            session,
            SubscriptionRow,
            [subscription.model_dump() for subscription in catalog.subscriptions],
            ["external_id"],
        )
        upsert(
            session,
            CouponRow,
            [
                {
                    **coupon.model_dump(),
                    "coupon_type": coupon.coupon_type.value,
                    "frequency": coupon.frequency.value,
                }
                for coupon in catalog.coupons
            ],
            ["code"],
        )
        upsert(
            session,
            WebhookEndpointRow,
            [
                {"code": endpoint.code, "url": endpoint.url, "secret": secrets[endpoint.code]}
                for endpoint in catalog.webhook_endpoints
            ],
            ["code"],
        )
