"""Pure domain core of the billing product: no I/O, no Temporal imports, no clock.

Start with :mod:`billing.models` (the catalog and the ledger), then
:mod:`billing.pricing` (aggregations and charge models, the public pricing API),
:mod:`billing.fees` (fees of a period) and :mod:`billing.invoicing` (totals, coupons,
taxes, credits, empty invoices). :mod:`billing.money` holds the one rounding rule,
:mod:`billing.periods` the calendar, :mod:`billing.signature` the webhook HMAC.
"""
