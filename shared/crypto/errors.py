"""Typed failures of secret decryption: every one means "refuse", never "fall back"."""

from __future__ import annotations


class SecretDecryptionError(Exception):
    """A stored secret could not be decrypted; the message never contains key or plaintext material."""


class MalformedBlob(SecretDecryptionError):
    """The blob does not have the envelope layout (truncated, bad lengths, bad magic)."""


class UnknownBlobVersion(SecretDecryptionError):
    """The blob's version prefix is not one this code can read."""


class DecryptionFailed(SecretDecryptionError):
    """Authentication failed: tampered ciphertext, wrong row (associated data) or wrong key."""


class UnknownKeyEncryptionKey(SecretDecryptionError):
    """The blob names a key-encryption key the provider does not hold."""
