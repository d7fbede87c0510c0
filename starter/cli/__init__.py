"""The ``billing`` command line: operators' and starter scripts' entry point.

A thin layer over :class:`starter.client.BillingClient`: one module per command group
(``period``, ``usage``, ``fee``, ``invoice``, ``coupon``, ``wallet``, ``webhook``,
``schedule``, ``codec`` for codec-server, and ``stack`` for dev, worker, db, catalog and
schema). Commands parse
flags, call the client and print; they never reach the store or Temporal themselves.

Exit codes scripts can trust: 0 success, 1 the operation was refused or failed
(the message says why), 2 bad usage (flags, files).
"""

from __future__ import annotations

import contextlib
import sys

import click

from starter.cli import (
    codec,
    coupon,
    fee,
    invoice,
    period,
    schedule,
    stack,
    usage,
    wallet,
    webhook,
)
from starter.cli._common import EXIT_REFUSED

__all__ = ["cli", "main"]


@click.group()
@click.version_option(package_name="billing-periods")
def cli() -> None:
    """Usage-based billing where every billing period is a durable Temporal workflow."""


for command in (
    stack.dev,
    stack.worker,
    stack.db,
    stack.catalog,
    period.period,
    usage.usage,
    fee.fee,
    invoice.invoice,
    coupon.coupon,
    wallet.wallet,
    webhook.webhook,
    schedule.schedule,
    codec.codec_server,
    stack.schema,
):
    cli.add_command(command)


def main() -> None:
    """Run the CLI; after a command that used the Temporal SDK, skip interpreter teardown.

    sdk-python issue 300: the SDK's Rust runtime keeps threads that may touch the GIL
    while CPython finalizes, which aborts the process ("PyGILState_Release ... must be
    current", SIGABRT) in roughly one short-lived run out of three here. The async work
    has completed by then (each command runs in one ``asyncio.run``), so once the command
    has returned we flush the output and leave with ``os._exit`` and the command's code.
    """
    try:
        cli.main(standalone_mode=True)
        code = 0
    except SystemExit as stop:
        code = _exit_code(stop.code)
    if not _used_temporal():
        sys.exit(code)
    import logging
    import os

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    click.echo(str(code), err=True)
    return EXIT_REFUSED


def _used_temporal() -> bool:
    """True when the command loaded the SDK (imported lazily, only by commands using it)."""
    return "temporalio" in sys.modules
