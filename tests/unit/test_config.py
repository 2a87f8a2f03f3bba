"""Settings: prefix, *_FILE secrets, production guards, one-line errors naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import AetherSettings, ConfigurationError, Environment, KeyProvider, load_settings

PRODUCTION_OK = {
    "AETHER_ENV": "production",
    "AETHER_DATABASE_URL": "postgresql+psycopg://svc:s3cr3t-Value@db.internal:5432/aether?sslmode=verify-full",
    "AETHER_REDIS_URL": "rediss://:s3cr3t-Value@redis.internal:6380/0",
    "AETHER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "AETHER_JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----",
    "AETHER_KEY_PROVIDER": "kms",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.startswith("AETHER_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults_point_at_the_local_stack(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(AetherSettings)
    assert settings.env is Environment.DEVELOPMENT
    assert settings.kafka_bootstrap == "127.0.0.1:19092"
    assert "127.0.0.1:54329" in settings.database_url.get_secret_value()


def test_prefix_reads_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AETHER_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    clean_env.setenv("AETHER_ENV", "test")
    settings = load_settings(AetherSettings)
    assert settings.kafka_bootstrap == "kafka-1:9092,kafka-2:9092"
    assert settings.env is Environment.TEST


def test_file_secret_is_read_without_trailing_newline(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "redis_url"
    secret.write_text("redis://:from-file@127.0.0.1:6379/2\n")
    clean_env.setenv("AETHER_REDIS_URL_FILE", str(secret))
    settings = load_settings(AetherSettings)
    assert settings.redis_url.get_secret_value() == "redis://:from-file@127.0.0.1:6379/2"


def test_file_and_value_together_is_an_error(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "redis_url"
    secret.write_text("redis://x")
    clean_env.setenv("AETHER_REDIS_URL_FILE", str(secret))
    clean_env.setenv("AETHER_REDIS_URL", "redis://y")
    with pytest.raises(ConfigurationError, match=r"^AETHER_REDIS_URL: set either"):
        load_settings(AetherSettings)


def test_unreadable_secret_file_names_the_variable(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("AETHER_JWT_PUBLIC_KEY_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigurationError, match=r"^AETHER_JWT_PUBLIC_KEY_FILE: cannot read"):
        load_settings(AetherSettings)


def test_bad_value_error_is_one_line_naming_the_setting(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AETHER_DATABASE_POOL_SIZE", "lots")
    with pytest.raises(ConfigurationError) as info:
        load_settings(AetherSettings)
    message = str(info.value)
    assert message.startswith("AETHER_DATABASE_POOL_SIZE:")
    assert "\n" not in message


def test_production_accepts_a_complete_configuration(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in PRODUCTION_OK.items():
        clean_env.setenv(name, value)
    settings = load_settings(AetherSettings)
    assert settings.env is Environment.PRODUCTION
    assert settings.key_provider is KeyProvider.KMS


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("AETHER_DATABASE_URL", "postgresql+psycopg://aether:aether@127.0.0.1:54329/aether", "AETHER_DATABASE_URL"),
        ("AETHER_DATABASE_URL", "postgresql+psycopg://u:change-me@db/a?sslmode=require", "AETHER_DATABASE_URL"),
        ("AETHER_DATABASE_URL", "postgresql+psycopg://u:Str0ng@db/a", "AETHER_DATABASE_URL"),
        ("AETHER_REDIS_URL", "redis://:Str0ng@redis:6379/0", "AETHER_REDIS_URL"),
        ("AETHER_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "AETHER_KAFKA_SECURITY_PROTOCOL"),
        ("AETHER_KEY_PROVIDER", "local", "AETHER_KEY_PROVIDER"),
    ],
)
def test_production_refuses_placeholders_and_plaintext(
    clean_env: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    for var, good in PRODUCTION_OK.items():
        clean_env.setenv(var, good)
    clean_env.setenv(name, value)
    with pytest.raises(ConfigurationError, match=rf"^{expected}:"):
        load_settings(AetherSettings)


def test_production_requires_a_key_provider(clean_env: pytest.MonkeyPatch) -> None:
    for var, good in PRODUCTION_OK.items():
        if var != "AETHER_KEY_PROVIDER":
            clean_env.setenv(var, good)
    with pytest.raises(ConfigurationError, match=r"^AETHER_KEY_PROVIDER: a key provider is required"):
        load_settings(AetherSettings)


def test_secrets_are_not_in_repr(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AETHER_REDIS_URL", "redis://:top-secret-canary@127.0.0.1:1/0")
    settings = load_settings(AetherSettings)
    assert "top-secret-canary" not in repr(settings)
    assert "top-secret-canary" not in str(settings.model_dump())
