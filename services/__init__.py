"""The business operations: one function per use case, each one unit of work.

A service opens a :class:`store.unit_of_work.UnitOfWork`, loads through its
repositories, calls the pure rules of :mod:`billing`, and commits::

    with UnitOfWork(engine) as uow:
        invoice = uow.invoices.lock(invoice_id)     # load
        fees = compute_fees(...)                     # decide (billing/)
        uow.invoices.save_draft(...)                 # save
        uow.commit()

Activities, the client and the CLI call these functions; nothing outside ``store``
touches a session. Every operation is idempotent on its business key, because Temporal
may run an activity more than once.

- :mod:`services.usage`: record a batch of usage (accept or reject each event).
- :mod:`services.rejections`: keep and list refused inputs.
- :mod:`services.periods`: what a period's workflow needs to know about its customer.
- :mod:`services.invoices`: draft, refresh, fee adjustments, reading invoices.
- :mod:`services.draft_fees`: a draft's fees from its usage and the operators' edits.
- :mod:`services.finalization`: finalize, close or hold for approval; the preview.
- :mod:`services.grace_periods`: running drafts' deadlines follow their settings.
- :mod:`services.timeline`: every change of an invoice, recorded once.
- :mod:`services.catalog`: load a catalog, read the billing context and subscriptions.
- :mod:`services.coupons`: apply coupons, top up wallets.
- :mod:`services.webhooks`: the delivery log (attempts, operator retries, listing).
"""
