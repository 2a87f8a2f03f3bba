"""The sealed object format: a byte stream cut into chunks, each AES-256-GCM encrypted, plus an authenticated manifest.

A fresh 256-bit data key per object, wrapped by the key provider of `shared.crypto` (AAD binds the object id and
the KEK id). Chunk i is stored as ``nonce (12) | ciphertext | tag (16)`` with AAD = format | object id | i | final
flag, so a chunk moved, dropped, duplicated or a stream cut short fails authentication. The manifest (JSON) lists
every chunk's sizes and SHA-256, the whole stream's sizes and SHA-256, the KEK id, the wrapped data key and the
job's metadata; it carries an HMAC-SHA256 over its RFC 8785 canonical form under a key derived (HKDF) from the data
key, so no field can change without the data key. The manifest is written last: it is the commit marker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import rfc8785
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ops.storage.errors import IntegrityError
from shared.crypto import KeyProvider, SecretDecryptionError, UnknownKeyEncryptionKey

FORMAT = "aether-sealed-v1"
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32


def _chunk_aad(object_id: str, index: int, final: bool) -> bytes:
    return FORMAT.encode() + b"\x00" + object_id.encode() + b"\x00" + struct.pack(">Q?", index, final)


def _dek_aad(object_id: str, key_id: str) -> bytes:
    return FORMAT.encode() + b"\x00dek\x00" + object_id.encode() + b"\x00" + key_id.encode()


def _mac_key(data_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=FORMAT.encode() + b" manifest").derive(data_key)


def _mac(data_key: bytes, body: dict[str, Any]) -> str:
    return hmac.new(_mac_key(data_key), rfc8785.dumps(body), hashlib.sha256).hexdigest()


@dataclass(slots=True)
class ChunkInfo:
    index: int
    plain_bytes: int
    sealed_bytes: int
    sha256: str


@dataclass
class Sealer:
    """Encrypts one object's stream; `seal()` yields sealed chunks, `manifest()` then returns the signed manifest."""

    provider: KeyProvider
    object_id: str
    chunk_bytes: int
    key_id: str = ""
    chunks: list[ChunkInfo] = field(default_factory=list)
    _data_key: bytes = b""
    _wrapped: bytes = b""
    _plain_hash: Any = None
    _sealed_hash: Any = None

    def __post_init__(self) -> None:
        self.key_id = self.provider.current_key_id()
        self._data_key = AESGCM.generate_key(bit_length=256)
        self._wrapped = self.provider.wrap(self.key_id, self._data_key, _dek_aad(self.object_id, self.key_id))
        self._plain_hash = hashlib.sha256()
        self._sealed_hash = hashlib.sha256()

    def _seal_chunk(self, plain: bytes, final: bool) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        index = len(self.chunks)
        sealed = nonce + AESGCM(self._data_key).encrypt(nonce, plain, _chunk_aad(self.object_id, index, final))
        self._plain_hash.update(plain)
        self._sealed_hash.update(sealed)
        self.chunks.append(ChunkInfo(index, len(plain), len(sealed), hashlib.sha256(sealed).hexdigest()))
        return sealed

    def seal(self, blocks: Iterable[bytes]) -> Iterator[bytes]:
        """Re-cut `blocks` into chunks of `chunk_bytes` and yield each sealed; the last one is flagged final."""
        buffer = bytearray()
        for block in blocks:
            buffer += block
            # Keep at least one byte back: only the end of the stream tells which chunk is the final one.
            while len(buffer) > self.chunk_bytes:
                yield self._seal_chunk(bytes(buffer[: self.chunk_bytes]), final=False)
                del buffer[: self.chunk_bytes]
        yield self._seal_chunk(bytes(buffer), final=True)

    def manifest(self, kind: str, meta: dict[str, Any]) -> bytes:
        """The authenticated manifest (JSON bytes) of everything sealed so far, with the job's `meta`."""
        body: dict[str, Any] = {
            "format": FORMAT,
            "kind": kind,
            "object_id": self.object_id,
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "key_id": self.key_id,
            "wrapped_key": base64.b64encode(self._wrapped).decode("ascii"),
            "chunk_bytes": self.chunk_bytes,
            "chunks": [[c.index, c.plain_bytes, c.sealed_bytes, c.sha256] for c in self.chunks],
            "plain_bytes": sum(c.plain_bytes for c in self.chunks),
            "sealed_bytes": sum(c.sealed_bytes for c in self.chunks),
            "plain_sha256": self._plain_hash.hexdigest(),
            "sealed_sha256": self._sealed_hash.hexdigest(),
            "meta": meta,
        }
        return json.dumps({"body": body, "mac": _mac(self._data_key, body)}, indent=1).encode()


@dataclass(frozen=True)
class Manifest:
    """A manifest whose MAC verified: its fields can be trusted."""

    body: dict[str, Any]
    data_key: bytes

    @property
    def object_id(self) -> str:
        return str(self.body["object_id"])

    @property
    def created_at(self) -> datetime:
        return datetime.strptime(str(self.body["created_at"]), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)

    @property
    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.body["meta"]
        return meta

    @property
    def chunks(self) -> list[ChunkInfo]:
        return [ChunkInfo(int(i), int(p), int(s), str(h)) for i, p, s, h in self.body["chunks"]]

    @property
    def sealed_bytes(self) -> int:
        return int(self.body["sealed_bytes"])


def open_manifest(provider: KeyProvider, raw: bytes, object_id: str, where: str) -> Manifest:
    """Parse and authenticate a manifest of `object_id`; IntegrityError (naming `where`) on any mismatch."""
    try:
        document = json.loads(raw)
        body, mac = document["body"], str(document["mac"])
        key_id, wrapped = str(body["key_id"]), base64.b64decode(body["wrapped_key"], validate=True)
        if body["format"] != FORMAT:
            raise IntegrityError(f"manifest {where}: unknown format {body['format']!r}")
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"manifest {where} is unreadable (tampered or not a manifest)") from None
    if body.get("object_id") != object_id:
        raise IntegrityError(f"manifest {where} names object {body.get('object_id')!r}, expected {object_id!r}")
    try:
        data_key = provider.unwrap(key_id, wrapped, _dek_aad(object_id, key_id))
    except UnknownKeyEncryptionKey:
        raise IntegrityError(f"manifest {where}: key-encryption key {key_id!r} is not available") from None
    except SecretDecryptionError:
        raise IntegrityError(f"manifest {where}: the data key failed authentication (manifest tampered)") from None
    if len(data_key) != KEY_BYTES or not hmac.compare_digest(_mac(data_key, body), mac):
        raise IntegrityError(f"manifest {where} failed authentication (tampered)")
    try:
        manifest = Manifest(body, data_key)
        chunks = manifest.chunks
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"manifest {where} is malformed") from None
    if [c.index for c in chunks] != list(range(len(chunks))) or not chunks:
        raise IntegrityError(f"manifest {where} lists its chunks out of order")
    return manifest


def open_chunks(manifest: Manifest, source: IO[bytes], where: str) -> Iterator[bytes]:
    """Read, check (size, SHA-256, GCM tag, position) and decrypt every chunk of `source`; IntegrityError on any fault."""
    chunks = manifest.chunks
    whole_plain = hashlib.sha256()
    aead = AESGCM(manifest.data_key)
    for chunk in chunks:
        sealed = source.read(chunk.sealed_bytes)
        if len(sealed) != chunk.sealed_bytes:
            raise IntegrityError(f"{where}: truncated at chunk {chunk.index} of {len(chunks)}")
        if hashlib.sha256(sealed).hexdigest() != chunk.sha256:
            raise IntegrityError(f"{where}: chunk {chunk.index} does not match its SHA-256 (tampered)")
        final = chunk.index == len(chunks) - 1
        try:
            plain = aead.decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _chunk_aad(manifest.object_id, chunk.index, final)
            )
        except InvalidTag:
            raise IntegrityError(f"{where}: chunk {chunk.index} failed authentication") from None
        if len(plain) != chunk.plain_bytes:
            raise IntegrityError(f"{where}: chunk {chunk.index} has the wrong size")
        whole_plain.update(plain)
        yield plain
    if source.read(1):
        raise IntegrityError(f"{where}: data after the last chunk")
    if whole_plain.hexdigest() != manifest.body["plain_sha256"]:
        raise IntegrityError(f"{where}: the whole stream does not match its SHA-256")


def verify_chunks(manifest: Manifest, source: IO[bytes], where: str) -> int:
    """Check every chunk without keeping the plaintext; the plaintext size."""
    return sum(len(plain) for plain in open_chunks(manifest, source, where))
