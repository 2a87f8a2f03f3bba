"""Envelope encryption: a fresh AES-256-GCM data key per secret, wrapped by the provider's key-encryption key.

Blob layout (version 1), all lengths in bytes::

    b"AE" | version (1) | len(kek_id) (1) | kek_id (ascii) | len(wrapped) (2, big endian) | wrapped data key
          | nonce (12) | AES-256-GCM ciphertext + tag (16)

The row id is bound as associated data twice: the data key is wrapped with AAD = b"aether-dek" + header + row id
(so the key id cannot be edited), and the secret is encrypted with AAD = b"aether-data" + version + row id (so
re-wrapping under a new KEK leaves the ciphertext untouched). A blob copied to another row, a flipped bit, an
unknown version or an unknown KEK each raise a `SecretDecryptionError` subclass: decryption fails closed.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.crypto.errors import DecryptionFailed, MalformedBlob, SecretDecryptionError, UnknownBlobVersion
from shared.crypto.providers import KeyProvider

MAGIC = b"AE"
BLOB_VERSION = 1
NONCE_BYTES = 12
DATA_KEY_BYTES = 32
TAG_BYTES = 16
MAX_KEY_ID_BYTES = 255

__all__ = [
    "BLOB_VERSION",
    "DecryptionFailed",
    "MalformedBlob",
    "SecretDecryptionError",
    "UnknownBlobVersion",
    "blob_key_id",
    "decrypt_secret",
    "encrypt_secret",
    "rewrap_secret",
]


@dataclass(frozen=True, slots=True)
class _Envelope:
    version: int
    key_id: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes


def _header(version: int, key_id: str) -> bytes:
    raw_id = key_id.encode("ascii")
    if not 0 < len(raw_id) <= MAX_KEY_ID_BYTES:
        raise ValueError("key id must be 1..255 ascii bytes")
    return MAGIC + bytes([version, len(raw_id)]) + raw_id


def _dek_aad(version: int, key_id: str, row_id: str) -> bytes:
    return b"aether-dek\x00" + _header(version, key_id) + b"\x00" + row_id.encode("utf-8")


def _data_aad(version: int, row_id: str) -> bytes:
    return b"aether-data\x00" + MAGIC + bytes([version]) + b"\x00" + row_id.encode("utf-8")


def _pack(envelope: _Envelope) -> bytes:
    wrapped_len = struct.pack(">H", len(envelope.wrapped_key))
    header = _header(envelope.version, envelope.key_id)
    return header + wrapped_len + envelope.wrapped_key + envelope.nonce + envelope.ciphertext


def _parse(blob: bytes) -> _Envelope:
    if len(blob) < 4 or blob[:2] != MAGIC:
        raise MalformedBlob("not an Aether secret envelope")
    version = blob[2]
    if version != BLOB_VERSION:
        raise UnknownBlobVersion(f"unknown secret envelope version {version}")
    id_len = blob[3]
    offset = 4 + id_len
    try:
        key_id = blob[4:offset].decode("ascii")
        (wrapped_len,) = struct.unpack(">H", blob[offset : offset + 2])
    except (UnicodeDecodeError, struct.error):
        raise MalformedBlob("secret envelope header is malformed") from None
    offset += 2
    wrapped_key = blob[offset : offset + wrapped_len]
    offset += wrapped_len
    nonce = blob[offset : offset + NONCE_BYTES]
    ciphertext = blob[offset + NONCE_BYTES :]
    if not key_id or len(wrapped_key) != wrapped_len or len(nonce) != NONCE_BYTES or len(ciphertext) < TAG_BYTES:
        raise MalformedBlob("secret envelope is truncated")
    return _Envelope(version, key_id, wrapped_key, nonce, ciphertext)


def _check_row_id(row_id: str) -> None:
    if not row_id:
        raise ValueError("row_id must not be empty: it binds the secret to its row")


def encrypt_secret(provider: KeyProvider, plaintext: bytes, row_id: str) -> bytes:
    """Encrypt `plaintext` for the row `row_id` under a fresh data key wrapped by the provider's current KEK."""
    _check_row_id(row_id)
    key_id = provider.current_key_id()
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, _data_aad(BLOB_VERSION, row_id))
    wrapped = provider.wrap(key_id, data_key, _dek_aad(BLOB_VERSION, key_id, row_id))
    return _pack(_Envelope(BLOB_VERSION, key_id, wrapped, nonce, ciphertext))


def _unwrap(provider: KeyProvider, envelope: _Envelope, row_id: str) -> bytes:
    data_key = provider.unwrap(
        envelope.key_id, envelope.wrapped_key, _dek_aad(envelope.version, envelope.key_id, row_id)
    )
    if len(data_key) != DATA_KEY_BYTES:
        raise DecryptionFailed("unwrapped data key has the wrong length")
    return data_key


def decrypt_secret(provider: KeyProvider, blob: bytes, row_id: str) -> bytes:
    """The plaintext of `blob`, which must have been encrypted for `row_id`; raises SecretDecryptionError otherwise."""
    _check_row_id(row_id)
    envelope = _parse(bytes(blob))
    data_key = _unwrap(provider, envelope, row_id)
    try:
        return AESGCM(data_key).decrypt(envelope.nonce, envelope.ciphertext, _data_aad(envelope.version, row_id))
    except InvalidTag:
        raise DecryptionFailed("secret ciphertext failed authentication") from None


def rewrap_secret(provider: KeyProvider, blob: bytes, row_id: str, new_key_id: str) -> bytes:
    """The same secret with its data key re-wrapped under `new_key_id` (the ciphertext is verified, then kept)."""
    _check_row_id(row_id)
    envelope = _parse(bytes(blob))
    data_key = _unwrap(provider, envelope, row_id)
    try:  # prove the ciphertext is intact before vouching for it under the new key
        AESGCM(data_key).decrypt(envelope.nonce, envelope.ciphertext, _data_aad(envelope.version, row_id))
    except InvalidTag:
        raise DecryptionFailed("secret ciphertext failed authentication") from None
    wrapped = provider.wrap(new_key_id, data_key, _dek_aad(BLOB_VERSION, new_key_id, row_id))
    return _pack(_Envelope(BLOB_VERSION, new_key_id, wrapped, envelope.nonce, envelope.ciphertext))


def blob_key_id(blob: bytes) -> str:
    """The KEK id a blob's data key is wrapped under (raises MalformedBlob / UnknownBlobVersion)."""
    return _parse(bytes(blob)).key_id
