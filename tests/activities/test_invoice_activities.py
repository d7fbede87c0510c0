"""Invoice activities keep their Temporal names and wire shapes (saved histories replay)."""

from __future__ import annotations

import json

from temporalio import activity

from activities.invoices import InvoiceActivities, RemoveFeeAdjustmentRequest
from billing.models import RejectedEvent, UsageReceipt

ACTIVITY_NAMES = {
    "load_period_settings",
    "record_usage",
    "record_usage_batches",
    "create_draft",
    "queue_drafted_webhook",
    "draft_invoice",
    "refresh_draft",
    "adjust_fee",
    "remove_adjustment",
    "finalize_invoice",
    "recompute_grace_period",
    "record_rejection",
}


def test_activity_type_names_do_not_change() -> None:
    names = set()
    for attribute in vars(InvoiceActivities).values():
        definition = activity._Definition.from_callable(attribute) if callable(attribute) else None
        if definition is not None:
            names.add(definition.name)
    assert names == ACTIVITY_NAMES
    removal = activity._Definition.must_from_callable(InvoiceActivities.remove_fee_adjustment)
    assert removal.name == "remove_adjustment"


def test_the_usage_receipt_has_the_json_of_the_former_activity_result() -> None:
    receipt = UsageReceipt(
        accepted=2,
        duplicates=1,
        rejected=[RejectedEvent(transaction_id="t", code="calls", reason="why")],
    )
    assert json.loads(receipt.model_dump_json()) == {
        "accepted": 2,
        "duplicates": 1,
        "rejected": [{"transaction_id": "t", "code": "calls", "reason": "why"}],
    }
    assert UsageReceipt.model_validate_json(receipt.model_dump_json()) == receipt


def test_the_fee_adjustment_removal_request_keeps_its_fields() -> None:
    request = RemoveFeeAdjustmentRequest(invoice_id="i", charge_code="calls")
    assert json.loads(request.model_dump_json()) == {
        "invoice_id": "i",
        "charge_code": "calls",
        "requested_by": None,
    }
    # A payload recorded before ``requested_by`` existed still decodes.
    assert (
        RemoveFeeAdjustmentRequest.model_validate_json(
            '{"invoice_id": "i", "charge_code": "calls"}'
        )
        == request
    )
