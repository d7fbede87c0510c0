"""The billing period's inbox: what arrives, what waits, what is refused and why.

Every mutation arrives as a signal (fire and forget) or an update (the sender waits for
the result). Both become a :class:`QueuedCommand` in one queue that the workflow's main
loop works off in arrival order, so the invoice changes one step at a time.

- A signal's payload is decoded and validated here, never raised: a malformed one is
  refused with its reason. A usage signal is kept as received, its JSON text, and
  consecutive ones are merged into one store step that validates each and refuses a
  malformed one whole (in runs before patch ``local-edits-usage-as-received`` they were
  decoded and shape-checked on arrival and validated here when merged).
- An update's payload arrives typed; its validator refuses a wrong type early.
- A refused input becomes a :class:`RejectedInput` (query ``rejections``, the latest
  :data:`KEPT_REJECTIONS`) and a row of the ``rejected_inputs`` table, stored by
  :meth:`Inbox.store_rejections` with an idempotency key of workflow run and sequence.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from activities.invoices import InvoiceActivities, RecordRejectionRequest
from billing.models import Invoice, UsageBatchesReceipt, UsageEvent, UsageReceipt, describe_invalid
from workflows.messages import AddUsage, RejectedInput
from workflows.phases import ADD_USAGE, FINALIZE_INVOICE

__all__ = [
    "KEPT_REJECTIONS",
    "MAX_EVENTS_PER_ACTIVITY",
    "MAX_USAGE_SIGNALS_PER_STEP",
    "MAX_USAGE_TEXT_PER_STEP",
    "Inbox",
    "QueuedCommand",
    "RecordUsage",
    "RecordUsageTexts",
    "StoreCall",
    "batch_size",
]

KEPT_REJECTIONS = 100  # the query shows the latest ones; the database keeps all
MAX_EVENTS_PER_ACTIVITY = 2000  # usage signals merged into one store call, far below 2 MB
# Usage signals as received, merged into one local store step: a local activity's input
# is not kept in the history, so the bound is the step's own size (2,000,000 characters,
# ~12,000 events); its result is (services.usage bounds it), and lists one entry per
# malformed signal: at most MAX_USAGE_SIGNALS_PER_STEP of them.
MAX_USAGE_TEXT_PER_STEP = 2_000_000
MAX_USAGE_SIGNALS_PER_STEP = 100

StoreCall = Callable[..., Awaitable[Any]]
"""The workflow's way to run a store activity: ``store(activity, request, summary=...)``."""

RecordUsage = Callable[[list[UsageEvent], str | None], Awaitable[UsageReceipt]]
"""Records merged usage events; the second argument is who sent them (``requested_by``)."""

RecordUsageTexts = Callable[[list[str]], Awaitable[UsageBatchesReceipt]]
"""Validates and records usage signals as received (the JSON text of each)."""


@dataclass
class QueuedCommand:
    """One queued mutation; an update waits on ``done`` for its result or error.

    ``answered_by_finalization`` marks a finalize-now update: it asks for the final
    invoice, so finalization itself answers it when it is still queued then.
    """

    kind: str
    # The validated model; a usage signal's payload as received (JSON text, or decoded
    # JSON in runs that validate it in the workflow) until it is applied.
    message: Any
    from_update: bool
    answered_by_finalization: bool = False
    done: bool = False
    result: Any = None
    error: ApplicationError | None = None
    received_at: datetime = field(default_factory=lambda: workflow.now())


class Inbox:
    """The queue of accepted inputs and the record of refused ones."""

    def __init__(
        self,
        subscription_external_id: str,
        *,
        rejections: Iterable[RejectedInput] = (),
        inputs_rejected: int = 0,
        sequence: int = 0,
        invoice_id: str | None = None,
    ) -> None:
        # A list, not a deque: it is empty while the period waits, and an empty deque
        # costs ~0.6 KiB per cached period; the queue stays short (merged usage batches).
        self.queue: list[QueuedCommand] = []
        # Made at the first refusal: most periods refuse nothing, and an empty deque is
        # ~0.7 KiB per cached period (bench/README.md).
        self._rejections: deque[RejectedInput] | None = None
        for rejected in rejections:
            self._kept_rejections().append(rejected)
        self.inputs_rejected = inputs_rejected
        self.sequence = sequence  # numbers refusals across runs: their idempotency key
        self.signals_this_run = 0
        self.updates_this_run = 0
        self.unstored: list[RecordRejectionRequest] = []
        self._subscription_external_id = subscription_external_id
        # The draft, once there is one: refusals then go to its timeline too.
        self.invoice_id = invoice_id

    @property
    def rejections(self) -> Sequence[RejectedInput]:
        """The latest refusals, oldest first (at most :data:`KEPT_REJECTIONS`)."""
        return () if self._rejections is None else self._rejections

    def _kept_rejections(self) -> deque[RejectedInput]:
        if self._rejections is None:
            self._rejections = deque(maxlen=KEPT_REJECTIONS)
        return self._rejections

    # ------------------------------------------------------------------ arrival

    def receive_signal(
        self,
        kind: str,
        model: type[BaseModel],
        args: Sequence[Any],
        *,
        judge_now: Callable[[str], None] | None,
        answered_by_finalization: bool = False,
    ) -> bool:
        """Decode and queue a signal; False when it was refused (and recorded).

        ``judge_now`` is the phase check when the main loop no longer applies inputs:
        the signal is refused at once instead of waiting in the queue. An approval is
        ``answered_by_finalization``: a finalization racing it is its answer.
        """
        self.signals_this_run += 1
        message: Any
        try:
            if len(args) != 1:
                raise ValueError(f"expected one argument, got {len(args)}")
            payload = _decoded(args[0])
            if model is AddUsage:
                # Only the shape here; the events are validated when the batch is applied.
                if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
                    raise ValueError("expected an object with a list of events")
                message = payload
            else:
                message = model.model_validate(payload)
        except (ValidationError, ValueError, TypeError, UnicodeDecodeError) as err:
            self.reject(kind, f"malformed {kind} payload: {_short_error(err)}", excerpt(args))
            return False
        return self._admit(kind, message, judge_now, answered_by_finalization)

    def receive_usage_text(
        self, args: Sequence[RawValue], *, judge_now: Callable[[str], None] | None
    ) -> bool:
        """Queue a usage signal as received, its JSON text; its store step validates it.

        Only what cannot be a usage message is refused here: not exactly one payload, or
        one that is not JSON text.
        """
        self.signals_this_run += 1
        try:
            if len(args) != 1:
                raise ValueError(f"expected one argument, got {len(args)}")
            text = _json_text(args[0])
        except (ValueError, UnicodeDecodeError) as err:
            self.reject(
                ADD_USAGE, f"malformed {ADD_USAGE} payload: {_short_error(err)}", excerpt(args)
            )
            return False
        return self._admit(ADD_USAGE, text, judge_now, answered_by_finalization=False)

    def decoded_or_dropped(self, name: str, args: Sequence[RawValue]) -> list[Any] | None:
        """A signal's payloads decoded; None when they cannot be (the signal is dropped,
        as the SDK drops a signal it cannot decode for a handler of its own)."""
        try:
            return [workflow.payload_converter().from_payload(a.payload) for a in args]
        except Exception:
            workflow.logger.warning("dropped signal %s: its payload cannot be decoded", name)
            return None

    def _admit(
        self,
        kind: str,
        message: Any,
        judge_now: Callable[[str], None] | None,
        answered_by_finalization: bool,
    ) -> bool:
        """Queue an arrived input, or refuse it now when the phase no longer applies it."""
        if judge_now is not None:
            try:
                judge_now(kind)
            except ApplicationError as err:
                self.reject(kind, err.message, message)
                return False
        self.queue.append(
            QueuedCommand(
                kind,
                message,
                from_update=False,
                answered_by_finalization=answered_by_finalization,
            )
        )
        return True

    def receive_unknown_signal(self, name: str, args: Sequence[RawValue]) -> None:
        self.signals_this_run += 1
        self.reject(name, f"unknown signal {name!r}", excerpt(args))

    @staticmethod
    def check_payload(kind: str, message: Any, model: type[BaseModel]) -> None:
        """An update validator's first check: a missing or mistyped payload."""
        if not isinstance(message, model):
            raise ApplicationError(
                f"{kind}: expected a {model.__name__} object, got {type(message).__name__}",
                type="MalformedPayload",
                non_retryable=True,
            )

    async def submit(
        self, kind: str, message: BaseModel, *, answered_by_finalization: bool = False
    ) -> Any:
        """Queue an update's command and wait for its result; its refusal is raised."""
        self.updates_this_run += 1
        command = QueuedCommand(
            kind, message, from_update=True, answered_by_finalization=answered_by_finalization
        )
        self.queue.append(command)
        await workflow.wait_condition(lambda: command.done)
        if command.error is not None:
            raise command.error
        return command.result

    # ------------------------------------------------------------------ working off

    def holds_inputs_before(self, deadline: datetime) -> bool:
        """Whether inputs received before ``deadline`` still wait to be applied.

        A finalize-now update holds nothing back: finalization answers it.
        """
        return any(
            command.received_at < deadline and not command.answered_by_finalization
            for command in self.queue
        )

    def _take_usage_batch(
        self, first: QueuedCommand
    ) -> tuple[list[QueuedCommand], list[UsageEvent], str | None]:
        """``first`` and the usage signals queued right after it, merged into one batch.

        Usage signals are validated here, one merged batch per step, not in the signal
        handler: a burst of large batches would otherwise be checked in one workflow task
        and trip the SDK's deadlock detector. A malformed one is refused and done.
        """
        batch: list[QueuedCommand] = []
        events: list[UsageEvent] = []
        requested_by: str | None = None  # the first sender who named themselves
        command = first
        while True:
            try:
                message = AddUsage.model_validate(command.message)
            except ValidationError as err:
                reason = f"malformed add_usage payload: {_short_error(err)}"
                self.reject(ADD_USAGE, reason, excerpt([command.message]))
                command.done = True
            else:
                batch.append(command)
                events.extend(message.events)
                requested_by = requested_by or message.requested_by
            following = self.queue[0] if self.queue else None
            if (
                following is None
                or following.kind != ADD_USAGE
                or following.from_update
                or len(events) + batch_size(following.message) > MAX_EVENTS_PER_ACTIVITY
            ):
                return batch, events, requested_by
            command = self.queue.pop(0)

    def answer_finalization(self, invoice: Invoice, *, held: bool = False) -> None:
        """Finalize-now updates still queued are answered by the final ``invoice``.

        ``held``: the invoice waits for approval; finalize-now is answered with the held
        draft, while approvals stay queued (they are what the hold waits for).
        """
        answered = [
            c
            for c in self.queue
            if c.answered_by_finalization and (not held or c.kind == FINALIZE_INVOICE)
        ]
        for command in answered:
            self.queue.remove(command)
            command.result = invoice
            command.done = True

    async def work_off(
        self,
        apply: Callable[[QueuedCommand], Awaitable[Any]],
        record_usage: RecordUsage,
        record_usage_texts: RecordUsageTexts,
        store: StoreCall,
    ) -> None:
        """Apply every queued command in arrival order, then store the refusals.

        ``apply`` answers one command (its refusal is an ``ApplicationError``); usage
        signals go to ``record_usage`` (decoded) or ``record_usage_texts`` (as received)
        in merged batches.
        """
        while self.queue:
            command = self.queue.pop(0)
            if command.kind == ADD_USAGE and not command.from_update:
                if isinstance(command.message, str):
                    await self._apply_usage_texts(command, record_usage_texts)
                else:
                    await self._apply_usage_signals(command, record_usage)
                continue
            try:
                command.result = await apply(command)
            except ApplicationError as err:
                command.error = err
                self.reject(command.kind, err.message, command.message)
            command.done = True
        await self.store_rejections(store)

    async def _apply_usage_signals(
        self,
        first: QueuedCommand,
        record_usage: RecordUsage,
    ) -> None:
        """Merge consecutive usage signals into one store call (bounded history)."""
        batch, events, requested_by = self._take_usage_batch(first)
        if not events:
            return
        try:
            receipt = await record_usage(events, requested_by)
        except ApplicationError as err:
            for command in batch:
                self.reject(ADD_USAGE, err.message, f"{batch_size(command.message)} events")
        else:
            self._reject_events(receipt)
        for command in batch:
            command.done = True

    async def _apply_usage_texts(
        self, first: QueuedCommand, record_usage_texts: RecordUsageTexts
    ) -> None:
        """Usage signals as received, merged into one store step that validates them."""
        batch = [first]
        size = len(first.message)
        while self.queue:
            following = self.queue[0]
            if (
                following.kind != ADD_USAGE
                or following.from_update
                or not isinstance(following.message, str)
                or len(batch) == MAX_USAGE_SIGNALS_PER_STEP
                or size + len(following.message) > MAX_USAGE_TEXT_PER_STEP
            ):
                break
            batch.append(self.queue.pop(0))
            size += len(following.message)
        texts = [command.message for command in batch]
        try:
            receipt = await record_usage_texts(texts)
        except ApplicationError as err:
            for text in texts:
                self.reject(ADD_USAGE, err.message, text)
        else:
            for malformed in receipt.malformed:
                reason = f"malformed {ADD_USAGE} payload: {malformed.reason}"
                self.reject(ADD_USAGE, reason, texts[malformed.position])
            self._reject_events(receipt)
            if receipt.rejected_not_listed:
                reason = (
                    f"{receipt.rejected_not_listed} more events refused; each is kept with "
                    "its reason in the store's rejected events"
                )
                self.reject(ADD_USAGE, reason, None)
        for command in batch:
            command.done = True

    def _reject_events(self, receipt: UsageReceipt) -> None:
        """Record each event a usage step refused, with its reason."""
        for rejected in receipt.rejected:
            self.reject(ADD_USAGE, f"event {rejected.transaction_id}: {rejected.reason}", None)

    async def refuse_remaining(self, check: Callable[[str], None], store: StoreCall) -> None:
        """After finalization nothing is applied any more: refuse what is queued or arrives
        until every handler has finished, telling each sender why."""
        while True:
            while self.queue:
                command = self.queue.pop(0)
                try:
                    check(command.kind)
                except ApplicationError as err:
                    command.error = err
                    self.reject(command.kind, err.message, command.message)
                command.done = True
            await self.store_rejections(store)
            await workflow.wait_condition(
                lambda: workflow.all_handlers_finished() or bool(self.queue)
            )
            if not self.queue:
                return

    # ------------------------------------------------------------------ refusals

    def reject(self, kind: str, reason: str, message: Any) -> None:
        """Record a refused input for the query and for the database."""
        self.sequence += 1
        self.inputs_rejected += 1
        if isinstance(message, BaseModel):
            payload = message.model_dump_json()[:500]
        elif isinstance(message, str) or message is None:
            payload = (message or "")[:500]  # a usage signal's whole text, say
        else:
            payload = excerpt([message])
        self._kept_rejections().append(
            RejectedInput(
                kind=kind, reason=reason, received_at=workflow.now(), payload_excerpt=payload
            )
        )
        info = workflow.info()
        self.unstored.append(
            RecordRejectionRequest(
                key=f"{info.workflow_id}/{info.run_id}/{self.sequence}",
                source=info.workflow_id,
                kind=kind,
                payload=payload,
                reason=reason,
                subscription_external_id=self._subscription_external_id,
                invoice_id=self.invoice_id,
                requested_by=getattr(message, "requested_by", None),
            )
        )
        workflow.logger.info("rejected %s: %s", kind, reason)

    async def store_rejections(self, store: StoreCall) -> None:
        """Store every recorded refusal, one activity each, in the order they happened."""
        while self.unstored:
            request = self.unstored.pop(0)
            await store(
                InvoiceActivities.record_rejection,
                request,
                summary=f"record rejected {request.kind}",
            )


def batch_size(payload: Any) -> int:
    """The number of events of a usage signal's decoded payload (0 when not a list)."""
    events = payload.get("events") if isinstance(payload, dict) else None
    return len(events) if isinstance(events, list) else 0


def excerpt(args: Sequence[Any]) -> str:
    """The start of the JSON of a signal's arguments, for an operator to read."""
    try:
        return json.dumps([_decoded(a) for a in args], default=str)[:500]
    except Exception:  # an excerpt is best effort: the rejection itself must be recorded
        return f"<{len(args)} undecodable payload(s)>"


def _short_error(err: Exception) -> str:
    if isinstance(err, ValidationError):
        return describe_invalid(err)
    return str(err)[:300]


def _json_text(arg: RawValue) -> str:
    """A payload's JSON text, undecoded (a usage signal's store step validates it)."""
    encoding = arg.payload.metadata.get("encoding", b"")
    if encoding != b"json/plain":
        named = encoding.decode(errors="replace") or "(none)"
        raise ValueError(f"expected JSON text, got a payload encoded {named}")
    return arg.payload.data.decode("utf-8")


def _decoded(arg: Any) -> Any:
    """Signal arguments arrive as decoded JSON; dynamic handlers get raw payloads."""
    if isinstance(arg, RawValue):
        return workflow.payload_converter().from_payload(arg.payload)
    return arg
