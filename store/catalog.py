"""The catalog: billing entities, customers, metrics, plans, subscriptions, coupons,
wallets and webhook endpoints, loaded from YAML and read back as domain models.

A catalog is validated completely (domain models, charge properties, references)
before anything is written, and written in one transaction: a broken catalog writes
nothing. Loading is an idempotent upsert, so the same file can be loaded on every deploy.
Errors name the path of the offending field::

    InvalidCatalog: plans[1].charges[0].properties.graduated_ranges[2]: ...

Webhook endpoint secrets come from ``secret`` (literal) or ``secret_env`` (an environment
variable read at load time). A missing variable is an error unless the endpoint also
gives ``default_secret``, which the example catalog uses for local demos only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session

from billing.errors import InvalidCatalog, InvalidChargeProperties, NotFound
from billing.models import (
    AppliedCoupon,
    BillableMetric,
    BillingEntity,
    Coupon,
    CouponFrequency,
    CouponType,
    Customer,
    Plan,
    Subscription,
    Wallet,
)
from billing.pricing import validate_charge
from store._rows import (
    BillingContext,
    applied_coupon_model,
    dialect_insert,
    load_context,
    metric_model,
    subscription_model,
    transaction,
    upsert,
    utcnow,
)
from store.schema import (
    AppliedCouponRow,
    BillableMetricRow,
    BillingEntityRow,
    ChargeRow,
    CouponRow,
    CustomerRow,
    InvoiceSequenceRow,
    PlanRow,
    SubscriptionRow,
    WalletRow,
    WalletTransactionRow,
    WebhookEndpointRow,
)

__all__ = [
    "AppliedCouponEntry",
    "BillingContext",
    "CatalogReport",
    "WalletEntry",
    "WebhookEndpointEntry",
    "apply_coupon",
    "get_billing_context",
    "get_wallet",
    "list_applied_coupons",
    "list_subscriptions",
    "load_catalog",
    "load_catalog_file",
    "top_up_wallet",
]

SECTIONS = (
    "billing_entities",
    "customers",
    "billable_metrics",
    "plans",
    "subscriptions",
    "coupons",
    "applied_coupons",
    "wallets",
    "webhook_endpoints",
)


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AppliedCouponEntry(_Entry):
    """``applied_coupons[]``: a coupon given to a customer (id = idempotency key)."""

    id: str = Field(min_length=1, max_length=200)
    customer_external_id: str
    coupon_code: str
    amount_cents: int | None = Field(default=None, ge=0)
    percentage_rate: Decimal | None = Field(default=None, ge=0, le=100)


class WalletEntry(_Entry):
    """``wallets[]``: a customer's wallet and its initial prepaid credits (granted once)."""

    customer_external_id: str
    initial_balance_cents: int = Field(default=0, ge=0)


class WebhookEndpointEntry(_Entry):
    """``webhook_endpoints[]``: where webhooks go and the secret that signs them."""

    code: str = Field(min_length=1, max_length=100)
    url: str = Field(pattern=r"^https?://\S+$")
    secret: str | None = Field(default=None, min_length=1)
    secret_env: str | None = Field(default=None, min_length=1)
    default_secret: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookEndpointEntry:
        if (self.secret is None) == (self.secret_env is None):
            raise ValueError("give exactly one of secret or secret_env")
        return self

    def resolve_secret(self) -> str | None:
        if self.secret is not None:
            return self.secret
        assert self.secret_env is not None
        return os.environ.get(self.secret_env) or self.default_secret


class CatalogReport(BaseModel):
    """How many items of each section a load upserted."""

    model_config = ConfigDict(frozen=True)

    billing_entities: int = 0
    customers: int = 0
    billable_metrics: int = 0
    plans: int = 0
    charges: int = 0
    subscriptions: int = 0
    coupons: int = 0
    applied_coupons: int = 0
    wallets: int = 0
    webhook_endpoints: int = 0


class _Catalog(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    billing_entities: list[BillingEntity] = []
    customers: list[Customer] = []
    billable_metrics: list[BillableMetric] = []
    plans: list[Plan] = []
    subscriptions: list[Subscription] = []
    coupons: list[Coupon] = []
    applied_coupons: list[AppliedCouponEntry] = []
    wallets: list[WalletEntry] = []
    webhook_endpoints: list[WebhookEndpointEntry] = []


_M = TypeVar("_M", bound=BaseModel)


def _path(section: str, index: int, loc: Sequence[int | str]) -> str:
    text = f"{section}[{index}]"
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _parse_section(data: Mapping[str, Any], section: str, model: type[_M]) -> list[_M]:
    items = data.get(section) or []
    if not isinstance(items, list):
        raise InvalidCatalog(f"{section}: must be a list, not {type(items).__name__}")
    parsed: list[_M] = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InvalidCatalog(f"{section}[{index}]: must be a mapping")
        try:
            parsed.append(model.model_validate(item))
        except ValidationError as error:
            lines = [
                f"{_path(section, index, detail['loc'])}: {detail['msg']}"
                for detail in error.errors()
            ]
            raise InvalidCatalog("\n".join(lines)) from error
    return parsed


def _parse(data: Mapping[str, Any]) -> _Catalog:
    if not isinstance(data, Mapping):
        raise InvalidCatalog("catalog: must be a mapping of sections")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise InvalidCatalog(
            f"{unknown[0]}: unknown section (expected one of {', '.join(SECTIONS)})"
        )
    catalog = _Catalog(
        billing_entities=_parse_section(data, "billing_entities", BillingEntity),
        customers=_parse_section(data, "customers", Customer),
        billable_metrics=_parse_section(data, "billable_metrics", BillableMetric),
        plans=_parse_section(data, "plans", Plan),
        subscriptions=_parse_section(data, "subscriptions", Subscription),
        coupons=_parse_section(data, "coupons", Coupon),
        applied_coupons=_parse_section(data, "applied_coupons", AppliedCouponEntry),
        wallets=_parse_section(data, "wallets", WalletEntry),
        webhook_endpoints=_parse_section(data, "webhook_endpoints", WebhookEndpointEntry),
    )
    for section in SECTIONS:
        codes = [_key(item) for item in getattr(catalog, section)]
        seen: set[str] = set()
        for index, code in enumerate(codes):
            if code in seen:
                raise InvalidCatalog(f"{section}[{index}]: duplicate {code!r}")
            seen.add(code)
    return catalog


def _key(item: BaseModel) -> str:
    for name in ("code", "external_id", "id", "customer_external_id"):
        value = getattr(item, name, None)
        if isinstance(value, str):
            return value
    raise AssertionError(f"no key on {type(item).__name__}")  # pragma: no cover


def _check_timezone(path: str, timezone: str | None) -> None:
    if timezone is None:
        return
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidCatalog(f"{path}: unknown timezone {timezone!r}") from None


def _charge_error_path(prefix: str, charge_code: str, message: str) -> str:
    """Turn ``charge 'x': properties.tiers[2]: why`` into ``<prefix>.properties.tiers[2]: why``."""
    own = f"charge {charge_code!r}: "
    if message.startswith(own):
        message = message[len(own) :]
    if message.startswith("properties"):
        return f"{prefix}.{message}"
    return f"{prefix}: {message}"


def _existing(session: Session, column: Any, wanted: set[str]) -> set[str]:
    if not wanted:
        return set()
    return set(session.scalars(select(column).where(column.in_(wanted))).all())


def _check_references(session: Session, catalog: _Catalog) -> None:
    """Every reference must point into this catalog or into the stored one."""

    def known(own: Sequence[str], column: Any, wanted: set[str]) -> set[str]:
        return set(own) | _existing(session, column, wanted - set(own))

    entities = known(
        [e.code for e in catalog.billing_entities],
        BillingEntityRow.code,
        {c.billing_entity_code for c in catalog.customers},
    )
    customers = known(
        [c.external_id for c in catalog.customers],
        CustomerRow.external_id,
        {s.customer_external_id for s in catalog.subscriptions}
        | {a.customer_external_id for a in catalog.applied_coupons}
        | {w.customer_external_id for w in catalog.wallets},
    )
    metric_models = {m.code: m for m in catalog.billable_metrics}
    wanted_metrics = {ch.billable_metric_code for p in catalog.plans for ch in p.charges}
    for row in session.scalars(
        select(BillableMetricRow).where(
            BillableMetricRow.code.in_(wanted_metrics - set(metric_models))
        )
    ):
        metric_models[row.code] = metric_model(row)
    plans = known(
        [p.code for p in catalog.plans],
        PlanRow.code,
        {s.plan_code for s in catalog.subscriptions},
    )
    coupons = known(
        [c.code for c in catalog.coupons],
        CouponRow.code,
        {a.coupon_code for a in catalog.applied_coupons},
    )

    for index, entity in enumerate(catalog.billing_entities):
        _check_timezone(f"billing_entities[{index}].timezone", entity.timezone)
    for index, customer in enumerate(catalog.customers):
        _check_timezone(f"customers[{index}].timezone", customer.timezone)
        if customer.billing_entity_code not in entities:
            raise InvalidCatalog(
                f"customers[{index}].billing_entity_code: unknown billing entity "
                f"{customer.billing_entity_code!r}"
            )
    for plan_index, plan in enumerate(catalog.plans):
        for charge_index, charge in enumerate(plan.charges):
            prefix = f"plans[{plan_index}].charges[{charge_index}]"
            metric = metric_models.get(charge.billable_metric_code)
            if metric is None:
                raise InvalidCatalog(
                    f"{prefix}.billable_metric_code: unknown billable metric "
                    f"{charge.billable_metric_code!r}"
                )
            try:
                validate_charge(charge, metric)
            except InvalidChargeProperties as error:
                raise InvalidCatalog(_charge_error_path(prefix, charge.code, str(error))) from error
    for index, subscription in enumerate(catalog.subscriptions):
        if subscription.customer_external_id not in customers:
            raise InvalidCatalog(
                f"subscriptions[{index}].customer_external_id: unknown customer "
                f"{subscription.customer_external_id!r}"
            )
        if subscription.plan_code not in plans:
            raise InvalidCatalog(
                f"subscriptions[{index}].plan_code: unknown plan {subscription.plan_code!r}"
            )
    for index, applied in enumerate(catalog.applied_coupons):
        if applied.customer_external_id not in customers:
            raise InvalidCatalog(
                f"applied_coupons[{index}].customer_external_id: unknown customer "
                f"{applied.customer_external_id!r}"
            )
        if applied.coupon_code not in coupons:
            raise InvalidCatalog(
                f"applied_coupons[{index}].coupon_code: unknown coupon {applied.coupon_code!r}"
            )
    for index, wallet in enumerate(catalog.wallets):
        if wallet.customer_external_id not in customers:
            raise InvalidCatalog(
                f"wallets[{index}].customer_external_id: unknown customer "
                f"{wallet.customer_external_id!r}"
            )
    for index, endpoint in enumerate(catalog.webhook_endpoints):
        if endpoint.resolve_secret() is None:
            raise InvalidCatalog(
                f"webhook_endpoints[{index}].secret_env: environment variable "
                f"{endpoint.secret_env!r} is not set (set it, or give default_secret)"
            )


def _write(session: Session, catalog: _Catalog) -> CatalogReport:
    upsert(
        session,
        BillingEntityRow,
        [entity.model_dump() for entity in catalog.billing_entities],
        ["code"],
    )
    if catalog.billing_entities:
        sequences = dialect_insert(session, InvoiceSequenceRow).on_conflict_do_nothing(
            index_elements=["billing_entity_code"]
        )
        session.execute(
            sequences,
            [{"billing_entity_code": e.code, "last_number": 0} for e in catalog.billing_entities],
        )
    upsert(
        session,
        BillableMetricRow,
        [metric.model_dump(mode="json") for metric in catalog.billable_metrics],
        ["code"],
    )
    charges = 0
    for plan in catalog.plans:
        upsert(
            session,
            PlanRow,
            [plan.model_dump(mode="json", exclude={"charges"})],
            ["code"],
        )
        codes = [charge.code for charge in plan.charges]
        session.execute(
            delete(ChargeRow).where(ChargeRow.plan_code == plan.code, ChargeRow.code.not_in(codes))
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
        charges += len(plan.charges)
    upsert(
        session,
        CustomerRow,
        [
            {
                **customer.model_dump(),
                "finalize_zero_amount_invoice": customer.finalize_zero_amount_invoice.value,
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
            {"code": endpoint.code, "url": endpoint.url, "secret": endpoint.resolve_secret()}
            for endpoint in catalog.webhook_endpoints
        ],
        ["code"],
    )
    for wallet in catalog.wallets:
        _top_up(
            session,
            wallet.customer_external_id,
            wallet.initial_balance_cents,
            f"catalog/{wallet.customer_external_id}/initial",
        )
    for applied in catalog.applied_coupons:
        _apply_coupon(
            session,
            customer_external_id=applied.customer_external_id,
            coupon_code=applied.coupon_code,
            applied_coupon_id=applied.id,
            amount_cents=applied.amount_cents,
            percentage_rate=applied.percentage_rate,
        )
    return CatalogReport(
        billing_entities=len(catalog.billing_entities),
        customers=len(catalog.customers),
        billable_metrics=len(catalog.billable_metrics),
        plans=len(catalog.plans),
        charges=charges,
        subscriptions=len(catalog.subscriptions),
        coupons=len(catalog.coupons),
        applied_coupons=len(catalog.applied_coupons),
        wallets=len(catalog.wallets),
        webhook_endpoints=len(catalog.webhook_endpoints),
    )


def load_catalog(engine: Engine, data: Mapping[str, Any]) -> CatalogReport:
    """Validate ``data`` and upsert it in one transaction; raises :class:`InvalidCatalog`."""
    catalog = _parse(data)
    with transaction(engine) as session:
        _check_references(session, catalog)
        return _write(session, catalog)


def load_catalog_file(engine: Engine, path: str | os.PathLike[str]) -> CatalogReport:
    """Load a YAML catalog file (see ``examples/catalog.yaml``)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise InvalidCatalog(f"{path}: not valid YAML: {error}") from error
    return load_catalog(engine, data or {})


# --------------------------------------------------------------------------- reads


def get_billing_context(engine: Engine, subscription_external_id: str) -> BillingContext:
    """The subscription with its customer, billing entity, plan and metrics."""
    with transaction(engine) as session:
        return load_context(session, subscription_external_id)


def list_subscriptions(engine: Engine) -> list[Subscription]:
    """All subscriptions, by external id (what ``period start-all`` launches)."""
    with transaction(engine) as session:
        rows = session.scalars(select(SubscriptionRow).order_by(SubscriptionRow.external_id))
        return [subscription_model(row) for row in rows]


# --------------------------------------------------------------------------- coupons, wallets


def _apply_coupon(
    session: Session,
    *,
    customer_external_id: str,
    coupon_code: str,
    applied_coupon_id: str,
    amount_cents: int | None,
    percentage_rate: Decimal | None,
) -> AppliedCoupon:
    existing = session.get(AppliedCouponRow, applied_coupon_id)
    if existing is not None:
        return applied_coupon_model(existing)
    coupon = session.get(CouponRow, coupon_code)
    if coupon is None:
        raise NotFound(f"coupon {coupon_code!r} does not exist")
    if session.get(CustomerRow, customer_external_id) is None:
        raise NotFound(f"customer {customer_external_id!r} does not exist")
    fixed = coupon.coupon_type == CouponType.FIXED_AMOUNT.value
    amount = (amount_cents if amount_cents is not None else coupon.amount_cents) if fixed else None
    rate = (
        None
        if fixed
        else (percentage_rate if percentage_rate is not None else coupon.percentage_rate)
    )
    order = session.scalar(
        select(func.coalesce(func.max(AppliedCouponRow.applied_order), 0)).where(
            AppliedCouponRow.customer_external_id == customer_external_id
        )
    )
    values = {
        "id": applied_coupon_id,
        "coupon_code": coupon_code,
        "customer_external_id": customer_external_id,
        "applied_order": int(order or 0) + 1,
        "coupon_type": coupon.coupon_type,
        "amount_cents": amount,
        "percentage_rate": rate,
        "frequency": coupon.frequency,
        "frequency_duration_remaining": coupon.frequency_duration
        if coupon.frequency == CouponFrequency.RECURRING.value
        else None,
        "amount_cents_remaining": amount
        if fixed and coupon.frequency == CouponFrequency.ONCE.value
        else None,
        "status": "active",
        "created_at": utcnow(),
    }
    statement = dialect_insert(session, AppliedCouponRow).on_conflict_do_nothing(
        index_elements=["id"]
    )
    session.execute(statement, [values])
    row = session.get(AppliedCouponRow, applied_coupon_id, populate_existing=True)
    assert row is not None
    return applied_coupon_model(row)


def apply_coupon(
    engine: Engine,
    *,
    customer_external_id: str,
    coupon_code: str,
    applied_coupon_id: str,
    amount_cents: int | None = None,
    percentage_rate: Decimal | None = None,
) -> AppliedCoupon:
    """Give a coupon to a customer; idempotent on ``applied_coupon_id``.

    ``amount_cents`` / ``percentage_rate`` override the coupon's own value. It is used
    at the customer's next finalization, never on a draft.
    """
    with transaction(engine) as session:
        return _apply_coupon(
            session,
            customer_external_id=customer_external_id,
            coupon_code=coupon_code,
            applied_coupon_id=applied_coupon_id,
            amount_cents=amount_cents,
            percentage_rate=percentage_rate,
        )


def _top_up(
    session: Session, customer_external_id: str, amount_cents: int, transaction_id: str
) -> Wallet:
    if amount_cents < 0:
        raise ValueError("a top-up cannot be negative")
    if session.get(CustomerRow, customer_external_id) is None:
        raise NotFound(f"customer {customer_external_id!r} does not exist")
    now = utcnow()
    session.execute(
        dialect_insert(session, WalletRow).on_conflict_do_nothing(
            index_elements=["customer_external_id"]
        ),
        [{"customer_external_id": customer_external_id, "balance_cents": 0, "updated_at": now}],
    )
    inserted = session.execute(
        dialect_insert(session, WalletTransactionRow)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(WalletTransactionRow.id),
        [
            {
                "id": transaction_id,
                "customer_external_id": customer_external_id,
                "kind": "top_up",
                "amount_cents": amount_cents,
                "invoice_id": None,
                "created_at": now,
            }
        ],
    ).all()
    if inserted:
        session.execute(
            update(WalletRow)
            .where(WalletRow.customer_external_id == customer_external_id)
            .values(balance_cents=WalletRow.balance_cents + amount_cents, updated_at=now)
        )
    balance = session.scalar(
        select(WalletRow.balance_cents).where(
            WalletRow.customer_external_id == customer_external_id
        )
    )
    return Wallet(customer_external_id=customer_external_id, balance_cents=int(balance or 0))


def top_up_wallet(
    engine: Engine, *, customer_external_id: str, amount_cents: int, transaction_id: str
) -> Wallet:
    """Add prepaid credits; idempotent on ``transaction_id`` (a retry adds nothing)."""
    with transaction(engine) as session:
        return _top_up(session, customer_external_id, amount_cents, transaction_id)


def get_wallet(engine: Engine, customer_external_id: str) -> Wallet:
    """The customer's wallet (balance 0 when none was ever opened)."""
    with transaction(engine) as session:
        balance = session.scalar(
            select(WalletRow.balance_cents).where(
                WalletRow.customer_external_id == customer_external_id
            )
        )
        return Wallet(customer_external_id=customer_external_id, balance_cents=int(balance or 0))


def list_applied_coupons(engine: Engine, customer_external_id: str) -> list[AppliedCoupon]:
    """The customer's applied coupons in the order they were applied."""
    with transaction(engine) as session:
        rows = session.scalars(
            select(AppliedCouponRow)
            .where(AppliedCouponRow.customer_external_id == customer_external_id)
            .order_by(AppliedCouponRow.applied_order, AppliedCouponRow.id)
        )
        return [applied_coupon_model(row) for row in rows]
