"""A catalog document: parsed, checked and reported on, before anything is stored.

A catalog (``examples/catalog.yaml``) lists billing entities, customers, metrics, plans,
subscriptions, coupons, applied coupons, wallets and webhook endpoints. It is validated
completely (domain models, charge properties, references) before it is written, and
errors name the path of the offending field::

    InvalidCatalog: plans[1].charges[0].properties.graduated_ranges[2]: ...

References may point into the catalog itself or into what is already stored:
:func:`references` says what the catalog needs from the store, :func:`check_catalog`
checks it against what the store has (:class:`StoredCatalog`).

Webhook endpoint secrets come from ``secret`` (literal) or ``secret_env`` (a variable of
the environment the caller passes). A missing variable is an error unless the endpoint
also gives ``default_secret``, which the example catalog uses for local demos only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from billing.decimals import PlainDecimal
from billing.errors import InvalidCatalog, InvalidChargeProperties
from billing.models import (
    BillableMetric,
    BillingEntity,
    Coupon,
    Customer,
    Plan,
    Subscription,
)
from billing.pricing import validate_charge

__all__ = [
    "SECTIONS",
    "AppliedCouponEntry",
    "Catalog",
    "CatalogReferences",
    "CatalogReport",
    "StoredCatalog",
    "WalletEntry",
    "WebhookEndpointEntry",
    "check_catalog",
    "parse_catalog",
    "references",
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
    percentage_rate: PlainDecimal | None = Field(default=None, ge=0, le=100)


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

    def resolve_secret(self, environ: Mapping[str, str]) -> str | None:
        """The literal secret, else ``environ[secret_env]``, else ``default_secret``."""
        if self.secret is not None:
            return self.secret
        assert self.secret_env is not None
        return environ.get(self.secret_env) or self.default_secret


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


class Catalog(BaseModel):
    """A parsed catalog document, one list per section."""

    model_config = ConfigDict(frozen=True)

    billing_entities: list[BillingEntity] = []
    customers: list[Customer] = []
    billable_metrics: list[BillableMetric] = []
    plans: list[Plan] = []
    subscriptions: list[Subscription] = []
    coupons: list[Coupon] = []
    applied_coupons: list[AppliedCouponEntry] = []
    wallets: list[WalletEntry] = []
    webhook_endpoints: list[WebhookEndpointEntry] = []

    def report(self) -> CatalogReport:
        """The counts of this catalog, as a load reports them."""
        return CatalogReport(
            charges=sum(len(plan.charges) for plan in self.plans),
            **{section: len(getattr(self, section)) for section in SECTIONS},
        )


class CatalogReferences(BaseModel):
    """Codes a catalog references without defining them: the store must have them."""

    model_config = ConfigDict(frozen=True)

    billing_entities: frozenset[str] = frozenset()
    customers: frozenset[str] = frozenset()
    billable_metrics: frozenset[str] = frozenset()
    plans: frozenset[str] = frozenset()
    coupons: frozenset[str] = frozenset()


class StoredCatalog(BaseModel):
    """Which of a :class:`CatalogReferences` the store has (metrics as models)."""

    model_config = ConfigDict(frozen=True)

    billing_entities: frozenset[str] = frozenset()
    customers: frozenset[str] = frozenset()
    billable_metrics: dict[str, BillableMetric] = {}
    plans: frozenset[str] = frozenset()
    coupons: frozenset[str] = frozenset()


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


def parse_catalog(data: Mapping[str, Any]) -> Catalog:
    """Parse a catalog document; raises :class:`InvalidCatalog` naming the bad field."""
    if not isinstance(data, Mapping):
        raise InvalidCatalog("catalog: must be a mapping of sections")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise InvalidCatalog(
            f"{unknown[0]}: unknown section (expected one of {', '.join(SECTIONS)})"
        )
    catalog = Catalog(
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


def references(catalog: Catalog) -> CatalogReferences:
    """What ``catalog`` references but does not define."""
    return CatalogReferences(
        billing_entities=frozenset(c.billing_entity_code for c in catalog.customers)
        - {e.code for e in catalog.billing_entities},
        customers=frozenset(
            {s.customer_external_id for s in catalog.subscriptions}
            | {a.customer_external_id for a in catalog.applied_coupons}
            | {w.customer_external_id for w in catalog.wallets}
        )
        - {c.external_id for c in catalog.customers},
        billable_metrics=frozenset(
            ch.billable_metric_code for p in catalog.plans for ch in p.charges
        )
        - {m.code for m in catalog.billable_metrics},
        plans=frozenset(s.plan_code for s in catalog.subscriptions)
        - {p.code for p in catalog.plans},
        coupons=frozenset(a.coupon_code for a in catalog.applied_coupons)
        - {c.code for c in catalog.coupons},
    )


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


def check_catalog(catalog: Catalog, stored: StoredCatalog, environ: Mapping[str, str]) -> None:
    """Every reference points into ``catalog`` or into ``stored``; every charge is valid.

    ``environ`` gives the webhook secrets named by ``secret_env``.
    """
    entities = {e.code for e in catalog.billing_entities} | stored.billing_entities
    customers = {c.external_id for c in catalog.customers} | stored.customers
    metrics = {**stored.billable_metrics, **{m.code: m for m in catalog.billable_metrics}}
    plans = {p.code for p in catalog.plans} | stored.plans
    coupons = {c.code for c in catalog.coupons} | stored.coupons

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
            metric = metrics.get(charge.billable_metric_code)
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
        if endpoint.resolve_secret(environ) is None:
            raise InvalidCatalog(
                f"webhook_endpoints[{index}].secret_env: environment variable "
                f"{endpoint.secret_env!r} is not set (set it, or give default_secret)"
            )
