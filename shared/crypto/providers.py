"""Key-encryption-key (KEK) providers: where the keys that wrap data keys live.

`LocalFileKeyProvider` keeps a keyring file (JSON, mode 0600) for development and tests, by default
`.aether/keys/kek.json`. Production uses `KmsKeyProvider` over a `KmsClient` (AWS KMS, GCP KMS or Vault transit
style: encrypt/decrypt with an encryption context); production settings refuse the local provider and refuse
to start without one (shared.config).
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.config import AetherSettings, ConfigurationError, Environment, env_name
from shared.config import KeyProvider as KeyProviderKind
from shared.crypto.errors import DecryptionFailed, UnknownKeyEncryptionKey

# Next to the local stack's files (AETHER_HOME, default ./.aether), like the other development state.
DEFAULT_KEYRING_NAME = Path("keys") / "kek.json"
KEYRING_MODE = 0o600
NONCE_BYTES = 12

__all__ = [
    "KeyProvider",
    "KmsClient",
    "KmsKeyProvider",
    "LocalFileKeyProvider",
    "UnknownKeyEncryptionKey",
    "key_provider_from_settings",
]


@runtime_checkable
class KeyProvider(Protocol):
    """Wraps and unwraps data keys with a named KEK; `aad` must match exactly on unwrap."""

    def current_key_id(self) -> str:
        """The KEK new secrets are wrapped under."""
        ...

    def wrap(self, key_id: str, data_key: bytes, aad: bytes) -> bytes:
        """Encrypt `data_key` under KEK `key_id`, binding `aad`."""
        ...

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        """Decrypt a wrapped data key; raise UnknownKeyEncryptionKey or DecryptionFailed."""
        ...

    def create_key(self) -> str:
        """Make a new KEK the current one (rotation); return its id."""
        ...


class LocalFileKeyProvider:
    """KEKs in a JSON keyring file: {"current": id, "keys": {id: base64 32-byte key}}; development and tests only."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        if not path.exists():
            if not create:
                raise ConfigurationError(f"{env_name('local_kek_file')}: keyring {path} does not exist")
            self._write({"current": None, "keys": {}})
            self.create_key()

    def _read(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.path.read_text(encoding="utf-8"))
        return data

    def _keys(self) -> dict[str, str]:
        keys = self._read().get("keys")
        return dict(keys) if isinstance(keys, dict) else {}

    def _write(self, data: dict[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            os.fchmod(fd, KEYRING_MODE)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle)
            os.replace(tmp_name, self.path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def current_key_id(self) -> str:
        current = self._read().get("current")
        if not isinstance(current, str):
            raise ConfigurationError(f"{env_name('local_kek_file')}: keyring {self.path} has no current key")
        return current

    def key_ids(self) -> list[str]:
        """Every KEK id in the keyring (old ones stay until no blob uses them)."""
        return sorted(self._keys())

    def _kek(self, key_id: str) -> bytes:
        encoded = self._keys().get(key_id)
        if encoded is None:
            raise UnknownKeyEncryptionKey(f"key-encryption key {key_id!r} is not in the keyring")
        return base64.b64decode(encoded)

    def wrap(self, key_id: str, data_key: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(self._kek(key_id)).encrypt(nonce, data_key, aad)

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        kek = self._kek(key_id)
        try:
            return AESGCM(kek).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], aad)
        except (InvalidTag, ValueError):
            raise DecryptionFailed("data key failed authentication") from None

    def create_key(self) -> str:
        key_id = f"kek-{datetime.now(UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:8]}"
        data = self._read()
        keys = self._keys()
        keys[key_id] = base64.b64encode(AESGCM.generate_key(bit_length=256)).decode("ascii")
        data.update(current=key_id, keys=keys)
        self._write(data)
        return key_id


class KmsClient(Protocol):
    """The two calls a cloud KMS offers (AWS KMS Encrypt/Decrypt with EncryptionContext, Vault transit...)."""

    def encrypt(self, key_id: str, plaintext: bytes, context: bytes) -> bytes:
        """Ciphertext of `plaintext` under the KMS key `key_id`, bound to `context`."""
        ...

    def decrypt(self, key_id: str, ciphertext: bytes, context: bytes) -> bytes:
        """Plaintext; raises when the key, ciphertext or context do not match."""
        ...

    def create_key(self) -> str:
        """A new KMS key (or key version) id."""
        ...


class KmsKeyProvider:
    """KEKs held by a KMS: the key never leaves it; we only ever see wrapped data keys."""

    def __init__(self, client: KmsClient, key_id: str) -> None:
        self._client = client
        self._key_id = key_id

    def current_key_id(self) -> str:
        return self._key_id

    def wrap(self, key_id: str, data_key: bytes, aad: bytes) -> bytes:
        return self._client.encrypt(key_id, data_key, aad)

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        try:
            return self._client.decrypt(key_id, wrapped, aad)
        except Exception as exc:  # the KMS's own error types vary: every failure means "refuse"
            raise DecryptionFailed(f"KMS refused to unwrap the data key ({type(exc).__name__})") from None

    def create_key(self) -> str:
        self._key_id = self._client.create_key()
        return self._key_id


def default_keyring() -> Path:
    """`$AETHER_HOME/keys/kek.json` (AETHER_HOME defaults to `.aether` in the working directory)."""
    return Path(os.environ.get("AETHER_HOME", ".aether")) / DEFAULT_KEYRING_NAME


def key_provider_from_settings(settings: AetherSettings) -> KeyProvider:
    """The configured provider; the local keyring outside production, never a silent default in production."""
    kind = settings.key_provider
    if kind is KeyProviderKind.KMS:
        raise ConfigurationError(
            f"{env_name('key_provider')}: kms needs a KmsClient wired by the deployment (KmsKeyProvider); none is built in"
        )
    if settings.env is Environment.PRODUCTION:
        raise ConfigurationError(f"{env_name('key_provider')}: production needs a KMS key provider")
    return LocalFileKeyProvider(settings.local_kek_file or default_keyring())
