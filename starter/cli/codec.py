"""``billing codec-server``: decode encrypted payloads for the Temporal UI and CLI."""

from __future__ import annotations

import asyncio
import sys

import click

from config.settings import Settings
from starter.cli._common import EXIT_USAGE, check_payload_keys, fail


@click.command("codec-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=None, help="Default: BILLING_CODEC_SERVER_PORT (8081).")
def codec_server(host: str, port: int | None) -> None:
    """Serve Temporal's remote codec endpoint (/decode, /encode) with the payload keys.

    Needs BILLING_PAYLOAD_KEYS (or BILLING_PAYLOAD_KEYS_FILE) and
    BILLING_CODEC_SERVER_TOKEN: callers present `Authorization: Bearer <token>`.
    """
    from config.codec import payload_codec
    from config.logging_setup import configure_logging
    from starter.codec_server import CodecServer, CodecServerError

    settings = Settings()
    check_payload_keys(settings)
    codec = payload_codec(settings)
    if codec is None:
        fail("the codec server needs BILLING_PAYLOAD_KEYS or BILLING_PAYLOAD_KEYS_FILE", EXIT_USAGE)
    if settings.codec_server_token is None:
        fail(
            "the codec server needs BILLING_CODEC_SERVER_TOKEN (its callers' credential)",
            EXIT_USAGE,
        )
    configure_logging(settings.log_level, process="codec-server")
    server = CodecServer(
        codec,
        token=settings.codec_server_token.get_secret_value(),
        namespace=settings.temporal_namespace,
        origins=settings.codec_server_origins.split(","),
    )

    async def serve() -> None:
        await server.start(host, settings.codec_server_port if port is None else port)
        click.echo(
            f"codec server at {server.url} for namespace {settings.temporal_namespace!r} "
            f"(keys {', '.join(codec.key_ids)}; Ctrl-C stops it)"
        )
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    try:
        asyncio.run(serve())
    except CodecServerError as err:
        fail(str(err.strerror), EXIT_USAGE)
    except KeyboardInterrupt:
        pass
    sys.exit(0)
