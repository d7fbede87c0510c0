"""``billing usage send``: usage events, each routed to the period containing its timestamp."""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from billing.models import UsageEvent
from starter.bulk import DEFAULT_CONCURRENCY
from starter.cli._common import (
    EXIT_REFUSED,
    EXIT_USAGE,
    fail,
    json_option,
    requested_by_option,
    run,
)

if TYPE_CHECKING:
    from starter.client import BillingClient


@click.group()
def usage() -> None:
    """Send usage events; each goes to the period containing its timestamp."""


def _parse_property(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--property")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def _read_events(source: str) -> tuple[list[UsageEvent], list[str]]:
    """Events of a JSONL file (``-``: stdin) and ``line N: why`` for each malformed line."""
    from pydantic import ValidationError

    if source == "-":
        lines = sys.stdin.read().splitlines()
    else:
        path = Path(source)
        if not path.is_file():
            fail(f"{source}: no such file (give a JSONL file, or - for stdin)", EXIT_USAGE)
        lines = path.read_text(encoding="utf-8").splitlines()
    events: list[UsageEvent] = []
    problems: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            events.append(UsageEvent.model_validate_json(line))
        except ValidationError as err:
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'line'}: {e['msg']}"
                for e in err.errors()[:3]
            )
            problems.append(f"line {number}: {detail}")
    return events, problems


@usage.command("send")
@click.option("--subscription", help="External subscription id (one event from flags).")
@click.option("--code", help="Billable metric code.")
@click.option("--transaction-id", help="Unique id of the event (default: a new UUID).")
@click.option("--timestamp", help="ISO 8601 time of the event (default: now; no zone means UTC).")
@click.option(
    "--property", "properties", multiple=True, help="KEY=VALUE (VALUE read as JSON when it parses)."
)
@click.option("--file", "file", help="JSONL file of events, one UsageEvent per line; - for stdin.")
@click.option(
    "--grace-seconds",
    type=click.IntRange(0),
    default=None,
    help="Grace period of periods this starts.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Periods sent to at once.",
)
@requested_by_option
@json_option
def usage_send(
    subscription: str | None,
    code: str | None,
    transaction_id: str | None,
    timestamp: str | None,
    properties: tuple[str, ...],
    file: str | None,
    grace_seconds: int | None,
    concurrency: int,
    requested_by: str | None,
    as_json: bool,
) -> None:
    """Send one event (flags) or many (--file); report accepted / duplicate / rejected.

    Exit code 1 when any event was rejected or any line was malformed (the others are sent).
    """
    from pydantic import ValidationError

    from starter.client import UsageReport
    from starter.output import console, err_console, print_json

    problems: list[str] = []
    if file is not None:
        if subscription or code or transaction_id or timestamp or properties:
            fail("give either --file or the event flags, not both", EXIT_USAGE)
        events, problems = _read_events(file)
    else:
        if not subscription or not code:
            fail("one event needs --subscription and --code (or give --file)", EXIT_USAGE)
        moment = datetime.now(UTC)
        if timestamp is not None:
            try:
                moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
            except ValueError:
                fail(f"--timestamp {timestamp!r}: not an ISO 8601 time", EXIT_USAGE)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
        try:
            events = [
                UsageEvent(
                    transaction_id=transaction_id or str(uuid.uuid4()),
                    external_subscription_id=subscription,
                    code=code,
                    timestamp=moment,
                    properties=dict(_parse_property(p) for p in properties),
                )
            ]
        except ValidationError as err:
            fail(f"invalid event: {err.errors()[0]['msg']}", EXIT_USAGE)

    async def work(billing: BillingClient) -> UsageReport:
        return await billing.send_usage(
            events,
            grace_period_seconds=grace_seconds,
            concurrency=concurrency,
            requested_by=requested_by,
        )

    report = run(work) if events else UsageReport()
    if as_json:
        print_json({**report.model_dump(mode="json"), "malformed": problems})
    else:
        for problem in problems:
            err_console.print(f"[red]malformed[/red] {problem}")
        for delivery in report.periods:
            console.print(
                f"{delivery.workflow_id} ({delivery.period}): {delivery.accepted} accepted, "
                f"{delivery.duplicates} duplicate, {delivery.rejected} rejected"
            )
        for rejection in report.rejected:
            console.print(
                f"[red]rejected[/red] {rejection.transaction_id} ({rejection.code}): {rejection.reason}"
            )
        console.print(
            f"{report.accepted} accepted, {report.duplicates} duplicate, "
            f"{len(report.rejected)} rejected, {len(problems)} malformed"
        )
    if report.rejected or problems:
        sys.exit(EXIT_REFUSED)
