"""Envelope encryption (shared.crypto): round trip, row binding, rotation, and every failure fails closed."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from shared.config import AetherSettings, ConfigurationError, Environment, KeyProvider
from shared.crypto import (
    DecryptionFailed,
    LocalFileKeyProvider,
    MalformedBlob,
    SecretDecryptionError,
    UnknownBlobVersion,
    UnknownKeyEncryptionKey,
    blob_key_id,
    decrypt_secret,
    encrypt_secret,
    key_provider_from_settings,
    rewrap_secret,
)
from shared.crypto.secrets_dir import MountedSecretError, read_mounted_credentials


@pytest.fixture
def provider(tmp_path: Path) -> LocalFileKeyProvider:
    return LocalFileKeyProvider(tmp_path / "keys" / "kek.json")


def test_round_trip_and_fresh_data_key_per_secret(provider: LocalFileKeyProvider) -> None:
    first = encrypt_secret(provider, b"s3cret", "row-1")
    second = encrypt_secret(provider, b"s3cret", "row-1")
    assert first != second  # fresh data key and nonce each time
    assert b"s3cret" not in first
    assert decrypt_secret(provider, first, "row-1") == b"s3cret"
    assert decrypt_secret(provider, second, "row-1") == b"s3cret"
    assert first[:3] == b"AE\x01"


def test_keyring_file_is_private(provider: LocalFileKeyProvider) -> None:
    assert stat.S_IMODE(provider.path.stat().st_mode) == 0o600
    assert json.loads(provider.path.read_text())["current"] == provider.current_key_id()


def test_other_row_is_refused(provider: LocalFileKeyProvider) -> None:
    blob = encrypt_secret(provider, b"s3cret", "row-1")
    with pytest.raises(DecryptionFailed):
        decrypt_secret(provider, blob, "row-2")


def test_unknown_version_and_garbage_are_typed_errors(provider: LocalFileKeyProvider) -> None:
    blob = encrypt_secret(provider, b"s3cret", "row-1")
    with pytest.raises(UnknownBlobVersion):
        decrypt_secret(provider, blob[:2] + b"\x02" + blob[3:], "row-1")
    with pytest.raises(MalformedBlob):
        decrypt_secret(provider, b"not a blob", "row-1")
    with pytest.raises(MalformedBlob):
        decrypt_secret(provider, blob[:20], "row-1")


def test_every_single_bit_flip_fails_closed(provider: LocalFileKeyProvider) -> None:
    blob = encrypt_secret(provider, b"exchange-secret", "row-1")
    failures = 0
    for position in range(len(blob)):
        for bit in (0, 7):
            tampered = bytearray(blob)
            tampered[position] ^= 1 << bit
            with pytest.raises(SecretDecryptionError):
                decrypt_secret(provider, bytes(tampered), "row-1")
            failures += 1
    assert failures == 2 * len(blob)


def test_rewrap_moves_to_the_new_kek_and_keeps_the_secret(provider: LocalFileKeyProvider) -> None:
    blob = encrypt_secret(provider, b"s3cret", "row-1")
    old_key = provider.current_key_id()
    new_key = provider.create_key()
    assert new_key != old_key
    rewrapped = rewrap_secret(provider, blob, "row-1", new_key)
    assert blob_key_id(rewrapped) == new_key
    assert decrypt_secret(provider, rewrapped, "row-1") == b"s3cret"
    assert set(provider.key_ids()) == {old_key, new_key}


def test_unknown_kek_fails_closed(provider: LocalFileKeyProvider, tmp_path: Path) -> None:
    blob = encrypt_secret(provider, b"s3cret", "row-1")
    other = LocalFileKeyProvider(tmp_path / "other.json")
    with pytest.raises(UnknownKeyEncryptionKey):
        decrypt_secret(other, blob, "row-1")


PRODUCTION = {
    "env": Environment.PRODUCTION,
    "database_url": "postgresql+psycopg://app:pw@db.internal:5432/aether?sslmode=verify-full",
    "redis_url": "rediss://redis.internal:6379/0",
    "kafka_security_protocol": "SSL",
    "jwt_public_key": "-----BEGIN PUBLIC KEY-----",
}


def test_production_refuses_the_local_provider_and_no_provider() -> None:
    with pytest.raises(ValueError, match="AETHER_KEY_PROVIDER: a key provider is required"):
        AetherSettings(**PRODUCTION, key_provider=None)
    with pytest.raises(ValueError, match="AETHER_KEY_PROVIDER: the local key provider"):
        AetherSettings(**PRODUCTION, key_provider=KeyProvider.LOCAL)
    AetherSettings(**PRODUCTION, key_provider=KeyProvider.KMS)
    with pytest.raises(ConfigurationError, match="KmsClient"):
        key_provider_from_settings(AetherSettings(env=Environment.TEST, key_provider=KeyProvider.KMS))


def test_mounted_secrets_dir(tmp_path: Path) -> None:
    folder = tmp_path / "acct-1"
    folder.mkdir()
    (folder / "api_key").write_text("KEY-123\n")
    (folder / "api_secret").write_text("SECRET-456\n")
    credentials = read_mounted_credentials(tmp_path, "acct-1")
    assert credentials is not None
    assert (credentials.api_key, credentials.api_secret, credentials.source) == ("KEY-123", "SECRET-456", "mounted")
    assert "SECRET-456" not in repr(credentials)
    assert read_mounted_credentials(tmp_path, "acct-2") is None
    (tmp_path / "acct-3").mkdir()
    (tmp_path / "acct-3" / "api_key").write_text("k")
    with pytest.raises(MountedSecretError, match="api_secret"):
        read_mounted_credentials(tmp_path, "acct-3")
    with pytest.raises(MountedSecretError):
        read_mounted_credentials(tmp_path, "../etc")
