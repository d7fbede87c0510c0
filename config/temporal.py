"""The one Temporal client factory used by the worker, the CLI and the tests.

Always the pydantic data converter (the default converter cannot encode ``Decimal``),
followed by the encryption codec when payload keys are configured (config/codec.py).
"""

from __future__ import annotations

from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType as IndexType
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from config.codec import data_converter
from config.settings import Settings
from workflows import search_attributes

__all__ = ["connect", "dev_server_search_attribute_flags", "register_search_attributes"]

_CLI_TYPES = {
    IndexType.KEYWORD: "Keyword",
    IndexType.TEXT: "Text",
    IndexType.INT: "Int",
    IndexType.DOUBLE: "Double",
    IndexType.BOOL: "Bool",
    IndexType.DATETIME: "Datetime",
}


async def connect(settings: Settings | None = None) -> Client:
    """Connect to ``TEMPORAL_ADDRESS`` with TLS or an API key when configured.

    Payloads are encrypted when ``BILLING_PAYLOAD_KEYS`` (or ``_FILE``) is set; unusable
    keys raise :class:`config.codec.PayloadKeyError` before any connection is made.
    """
    settings = settings or Settings()
    converter = data_converter(settings)
    tls: TLSConfig | bool = settings.temporal_tls
    if settings.temporal_tls_cert and settings.temporal_tls_key:
        tls = TLSConfig(
            client_cert=settings.temporal_tls_cert.read_bytes(),
            client_private_key=settings.temporal_tls_key.read_bytes(),
        )
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=converter,
        tls=tls if api_key is None else (tls or True),
        api_key=api_key,
    )


def dev_server_search_attribute_flags() -> list[str]:
    """``--search-attribute Name=Type`` flags for ``temporal server start-dev``."""
    flags: list[str] = []
    for key in search_attributes.ALL:
        flags += ["--search-attribute", f"{key.name}={_CLI_TYPES[key.indexed_value_type]}"]
    return flags


async def register_search_attributes(client: Client) -> list[str]:
    """Register the project's search attributes on a server; returns the ones added.

    The time-skipping test server implements AddSearchAttributes but not
    ListSearchAttributes, so a failed listing falls back to adding them all.
    """
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        known = set(existing.custom_attributes) | set(existing.system_attributes)
    except RPCError as err:
        if err.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        known = set()
    missing = {
        key.name: int(key.indexed_value_type)
        for key in search_attributes.ALL
        if key.name not in known
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace,
                search_attributes=missing,  # type: ignore[arg-type]
            )
        )
    return sorted(missing)
