"""Encrypted workflow payloads: AES-256-GCM keys from configuration and the payload codec.

Off unless keys are configured. ``BILLING_PAYLOAD_KEYS`` (or the file named by
``BILLING_PAYLOAD_KEYS_FILE``, same format) lists ``KEY_ID:BASE64_KEY`` entries separated
by commas (or new lines in the file); the first, the newest, encrypts, every one decrypts.
Each encrypted payload names its key in its metadata, so a key can be rotated: put the new
key first and keep the old ones for as long as histories encrypted with them are kept.

Errors name the variable, the entry and its key id, never the key material.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from config.settings import Settings

__all__ = [
    "ENCODING",
    "KEY_ID_METADATA",
    "EncryptionCodec",
    "PayloadKey",
    "PayloadKeyError",
    "data_converter",
    "parse_payload_keys",
    "payload_codec",
    "payload_keys",
]

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the GCM standard nonce, random per payload
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class PayloadKeyError(ValueError):
    """The configured payload keys are unusable; the message says which and why."""


@dataclass(frozen=True)
class PayloadKey:
    """One AES-256 key and the id that payloads encrypted with it carry."""

    key_id: str
    secret: bytes = field(repr=False)


def parse_payload_keys(text: str, source: str) -> tuple[PayloadKey, ...]:
    """``KEY_ID:BASE64_KEY`` entries (commas or new lines between them), newest first.

    ``source`` names where the text came from, for the error messages.
    """
    entries = [entry.strip() for entry in re.split(r"[,\n]", text)]
    entries = [entry for entry in entries if entry]
    if not entries:
        raise PayloadKeyError(f"{source} is set but holds no key (expected KEY_ID:BASE64_KEY)")
    keys: list[PayloadKey] = []
    for number, entry in enumerate(entries, start=1):
        key_id, colon, encoded = entry.partition(":")
        key_id, encoded = key_id.strip(), encoded.strip()
        where = f"{source}, entry {number}"
        if not colon or not key_id or not encoded:
            raise PayloadKeyError(f"{where}: expected KEY_ID:BASE64_KEY")
        if not _KEY_ID.fullmatch(key_id):
            raise PayloadKeyError(
                f"{where}: the key id must be 1 to 64 letters, digits, '.', '_' or '-'"
            )
        where = f"{where} (key id {key_id!r})"
        try:
            secret = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise PayloadKeyError(f"{where}: the key is not valid base64") from None
        if len(secret) != KEY_BYTES:
            raise PayloadKeyError(
                f"{where}: the key is {len(secret)} bytes, AES-256 needs {KEY_BYTES} "
                "(make one with `openssl rand -base64 32`)"
            )
        if any(key.key_id == key_id for key in keys):
            raise PayloadKeyError(f"{where}: the key id is listed twice")
        keys.append(PayloadKey(key_id, secret))
    return tuple(keys)


def payload_keys(settings: Settings) -> tuple[PayloadKey, ...]:
    """The configured keys, newest first; empty when payload encryption is off.

    Both variables may be set only when they hold the same keys (e.g. one derived from the
    other by a deployment tool).
    """
    from_env = from_file = None
    if settings.payload_keys is not None:
        from_env = parse_payload_keys(
            settings.payload_keys.get_secret_value(), "BILLING_PAYLOAD_KEYS"
        )
    if settings.payload_keys_file is not None:
        path = settings.payload_keys_file
        source = f"BILLING_PAYLOAD_KEYS_FILE ({path})"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise PayloadKeyError(f"{source}: cannot read it: {err.strerror or err}") from None
        except UnicodeDecodeError:
            raise PayloadKeyError(f"{source}: not a text file") from None
        from_file = parse_payload_keys(text, source)
    if from_env is not None and from_file is not None and from_env != from_file:
        raise PayloadKeyError(
            "BILLING_PAYLOAD_KEYS and BILLING_PAYLOAD_KEYS_FILE are both set and hold "
            "different keys: set only one of them"
        )
    return from_env or from_file or ()


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each whole serialized payload (its metadata included).

    Encrypts with the first key; decrypts with the key its metadata names. Payloads that
    are not encrypted pass through as they are, so histories written before encryption
    was turned on still replay.
    """

    def __init__(self, keys: Sequence[PayloadKey]) -> None:
        if not keys:
            raise PayloadKeyError("payload encryption needs at least one key")
        self._encrypting_id = keys[0].key_id.encode()
        self._encrypting = AESGCM(keys[0].secret)
        self._ciphers = {key.key_id.encode(): AESGCM(key.secret) for key in keys}

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids of the keys, newest (encrypting) first."""
        return tuple(key_id.decode() for key_id in self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        # The key id as associated data: a payload relabelled with another id fails.
        sealed = self._encrypting.encrypt(nonce, payload.SerializeToString(), self._encrypting_id)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: self._encrypting_id},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID_METADATA, b"")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadKeyError(
                f"payload encrypted with key id {key_id.decode(errors='replace')!r}, which is "
                f"not among the configured keys ({', '.join(self.key_ids)}); keep old keys "
                "after the newest one in BILLING_PAYLOAD_KEYS"
            )
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            plain = cipher.decrypt(nonce, sealed, key_id)
        except InvalidTag:
            raise PayloadKeyError(
                f"payload with key id {key_id.decode()!r} does not decrypt: the key under "
                "that id is not the one it was encrypted with, or the payload was altered"
            ) from None
        return Payload.FromString(plain)


def payload_codec(settings: Settings) -> EncryptionCodec | None:
    """The codec for the configured keys, or None when encryption is off.

    Raises :class:`PayloadKeyError` for unusable keys: call it at start-up.
    """
    keys = payload_keys(settings)
    return EncryptionCodec(keys) if keys else None


def data_converter(settings: Settings) -> DataConverter:
    """The pydantic data converter, with the encryption codec when keys are configured.

    With the codec, failure messages and stack traces move into the encrypted attributes
    too (they can quote invoice details); the failure's type stays in clear.
    """
    codec = payload_codec(settings)
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
