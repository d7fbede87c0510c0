"""The ``billing`` command line: operators' and starter scripts' entry point.

Exit codes scripts can trust: 0 success, 1 the operation was refused or failed
(the message says why), 2 bad usage (flags, files).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from starter.settings import Settings

__all__ = ["cli", "main"]

EXIT_REFUSED = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_REFUSED) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group()
@click.version_option(package_name="billing-periods")
def cli() -> None:
    """Usage-based billing where every billing period is a durable Temporal workflow."""


@cli.command()
@click.option("--demo", is_flag=True, help="Run the demo once the stack is up.")
@click.option("--exit-after-demo", is_flag=True, help="Stop the stack when the demo ends.")
def dev(demo: bool, exit_after_demo: bool) -> None:
    """Run the embedded stack: Temporal dev server + UI, database, webhook sink, worker."""
    from starter.dev import DevStackError, run_dev

    after_start = None
    if demo:
        from starter.demo import run_demo

        after_start = run_demo
    try:
        code = asyncio.run(
            run_dev(Settings(), after_start=after_start, stop_after=demo and exit_after_demo)
        )
    except DevStackError as err:
        fail(str(err), EXIT_USAGE)
    sys.exit(code)


@cli.command()
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True)
def worker(processes: int) -> None:
    """Run worker processes against TEMPORAL_ADDRESS (SIGINT/SIGTERM stop them cleanly)."""
    from worker import run_workers

    sys.exit(run_workers(processes))


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations to BILLING_DATABASE_URL (idempotent)."""
    from store.db import upgrade

    upgrade(Settings().database_url)
    click.echo("database is up to date")


@cli.group()
def catalog() -> None:
    """Billing entities, customers, metrics, plans, subscriptions, coupons, wallets."""


@catalog.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def catalog_load(file: Path) -> None:
    """Validate and load a YAML catalog (idempotent; nothing is written on error)."""
    from billing.errors import InvalidCatalog
    from store.catalog import load_catalog_file
    from store.db import make_engine

    engine = make_engine(Settings().database_url)
    try:
        report = load_catalog_file(engine, file)
    except InvalidCatalog as err:
        fail(f"{file}: {err}", EXIT_USAGE)
    finally:
        engine.dispose()
    click.echo(f"loaded {file}: {report}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
