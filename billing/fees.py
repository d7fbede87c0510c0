"""Fees of one billing period: the plan fee and one fee per charge, with adjustments.

Each fee is rounded once, here, from its unrounded ``precise_amount`` (currency units) to
``amount_cents`` with :func:`billing.money.to_cents`.

Adjusted fees (an operator's edit on a draft, :class:`billing.models.AdjustedFee`) are
applied on top of the usage, so that refreshing the draft never loses them:

- ``units``: the given total units are priced through the charge model (the period's
  usage no longer matters);
- ``amount``: units x unit_amount replaces the computed amount;
- ``display_name``: the computed fee, renamed.

Every mode honours ``display_name``, marks the fee ``adjusted`` and yields a fee even for
a charge with no usage.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from billing.charge_models import charge_amount
from billing.errors import InvalidCatalog
from billing.models import (
    SUBSCRIPTION_FEE_CODE,
    AdjustedFee,
    AdjustmentMode,
    BillableMetric,
    Charge,
    ChargeUsage,
    Fee,
    FeeKind,
    Plan,
    Subscription,
)
from billing.money import from_cents, to_cents
from billing.periods import proration_ratio
from billing.plans import require_charge
from billing.pricing import round_units

__all__ = ["charge_fee", "compute_fees", "plan_fee"]


def plan_fee(
    plan: Plan,
    subscription: Subscription,
    period_start: datetime,
    period_end: datetime,
    currency: str,
    timezone: str,
) -> Fee | None:
    """The plan fee, prorated by days when the subscription started inside the period.

    One unit whose price is the (prorated) plan amount, as Lago shows it; ``None`` when
    the plan costs nothing or the subscription does not cover the period.
    """
    ratio = proration_ratio(subscription.started_at, period_start, period_end, timezone)
    precise_amount = from_cents(plan.amount_cents, currency) * ratio
    amount_cents = to_cents(precise_amount, currency)
    if amount_cents == 0:
        return None
    return Fee(
        code=SUBSCRIPTION_FEE_CODE,
        kind=FeeKind.SUBSCRIPTION,
        display_name=plan.invoice_display_name or plan.name or plan.code,
        units=Decimal(1),
        amount_cents=amount_cents,
        precise_amount=precise_amount,
        unit_amount=precise_amount,
    )


def charge_fee(
    charge: Charge,
    metric: BillableMetric,
    usage: ChargeUsage,
    currency: str,
    adjustment: AdjustedFee | None = None,
) -> Fee | None:
    """The fee of one charge; ``None`` for 0 units and 0 amount unless adjusted."""
    if adjustment is not None and adjustment.mode == AdjustmentMode.UNITS:
        assert adjustment.units is not None  # AdjustedFee checks its shape
        # Priced as a total: per-event values belong to the usage the operator replaced.
        units = adjustment.units
        precise_amount = charge_amount(charge.charge_model, charge.properties, units)
    elif adjustment is not None and adjustment.mode == AdjustmentMode.AMOUNT:
        assert adjustment.units is not None and adjustment.unit_amount is not None
        units = adjustment.units
        precise_amount = units * adjustment.unit_amount
    else:
        units = round_units(metric, usage.units)
        precise_amount = charge_amount(
            charge.charge_model, charge.properties, units, usage.event_values
        )

    amount_cents = to_cents(precise_amount, currency)
    if adjustment is None and units == 0 and amount_cents == 0:
        return None  # no usage, nothing to bill: Lago shows no fee
    if adjustment is not None and adjustment.mode == AdjustmentMode.AMOUNT:
        unit_amount = adjustment.unit_amount or Decimal(0)
    else:
        unit_amount = precise_amount / units if units > 0 else Decimal(0)
    display_name = (
        (adjustment.display_name if adjustment else None)
        or charge.invoice_display_name
        or metric.name
        or charge.code
    )
    return Fee(
        code=charge.code,
        kind=FeeKind.CHARGE,
        display_name=display_name,
        units=units,
        amount_cents=amount_cents,
        precise_amount=precise_amount,
        unit_amount=unit_amount,
        events_count=usage.events_count,
        adjusted=adjustment is not None,
    )


def compute_fees(
    plan: Plan,
    metrics: Mapping[str, BillableMetric],
    subscription: Subscription,
    period_start: datetime,
    period_end: datetime,
    currency: str,
    timezone: str,
    usage: Mapping[str, ChargeUsage],
    adjustments: Mapping[str, AdjustedFee],
) -> tuple[Fee, ...]:
    """All fees of a draft: plan fee first, then charges in plan order.

    ``metrics`` is keyed by billable metric code; ``usage`` and ``adjustments`` by charge
    code (a charge without usage has none).
    """
    charge_codes = [charge.code for charge in plan.charges]
    for charge_code in sorted(adjustments):
        require_charge(charge_code, charge_codes)

    fees: list[Fee] = []
    subscription_fee = plan_fee(plan, subscription, period_start, period_end, currency, timezone)
    if subscription_fee is not None:
        fees.append(subscription_fee)
    for charge in plan.charges:
        metric = metrics.get(charge.billable_metric_code)
        if metric is None:
            raise InvalidCatalog(
                f"plans.{plan.code}.charges.{charge.code}: unknown billable metric "
                f"{charge.billable_metric_code!r}"
            )
        fee = charge_fee(
            charge,
            metric,
            usage.get(charge.code, ChargeUsage()),
            currency,
            adjustments.get(charge.code),
        )
        if fee is not None:
            fees.append(fee)
    return tuple(fees)
