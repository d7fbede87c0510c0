"""Pure domain core of the billing product: no I/O, no Temporal imports.

Start with :mod:`billing.models` (the catalog and the ledger), then
:mod:`billing.pricing` (aggregations and charge models), :mod:`billing.fees` (fees of a
period) and :mod:`billing.invoicing` (totals, coupons, taxes, credits, empty invoices).
"""
