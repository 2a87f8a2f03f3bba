"""Envelope encryption of stored secrets: AES-256-GCM data keys wrapped by a key-encryption key (KEK).

`encrypt_secret` / `decrypt_secret` / `rewrap_secret` in `.envelope`; key providers (local keyring file for
development and tests, a KMS-style provider for production) in `.providers`; Kubernetes-mounted per-account
credential files in `.secrets_dir`.
"""

from shared.crypto.envelope import (
    BLOB_VERSION,
    DecryptionFailed,
    MalformedBlob,
    SecretDecryptionError,
    UnknownBlobVersion,
    blob_key_id,
    decrypt_secret,
    encrypt_secret,
    rewrap_secret,
)
from shared.crypto.providers import (
    KeyProvider,
    KmsClient,
    KmsKeyProvider,
    LocalFileKeyProvider,
    UnknownKeyEncryptionKey,
    key_provider_from_settings,
)

__all__ = [
    "BLOB_VERSION",
    "DecryptionFailed",
    "KeyProvider",
    "KmsClient",
    "KmsKeyProvider",
    "LocalFileKeyProvider",
    "MalformedBlob",
    "SecretDecryptionError",
    "UnknownBlobVersion",
    "UnknownKeyEncryptionKey",
    "blob_key_id",
    "decrypt_secret",
    "encrypt_secret",
    "key_provider_from_settings",
    "rewrap_secret",
]
