"""Settings shared by every Aether process: pydantic-settings, `AETHER_` prefix, `*_FILE` secrets."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

ENV_PREFIX = "AETHER_"

# Substrings that mark a value as a development placeholder; production refuses them.
PLACEHOLDER_MARKERS = ("change-me", "changeme", "placeholder", "insecure", "dev-only")
DEV_DATABASE_URL = "postgresql+psycopg://aether:aether@127.0.0.1:54329/aether"
DEV_REDIS_URL = "redis://127.0.0.1:63799/0"
DEV_KAFKA_BOOTSTRAP = "127.0.0.1:19092"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class KeyProvider(StrEnum):
    LOCAL = "local"
    KMS = "kms"


class ConfigurationError(Exception):
    """Bad configuration; the message is one line that names the setting."""


def env_name(field_name: str) -> str:
    return f"{ENV_PREFIX}{field_name.upper()}"


class SecretFileSource(PydanticBaseSettingsSource):
    """Reads `AETHER_<NAME>_FILE` (a path) as the value of setting `<name>`, as Docker and Kubernetes mount secrets."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        file_var = f"{env_name(field_name)}_FILE"
        path = os.environ.get(file_var)
        if path is None:
            return None, field_name, False
        if env_name(field_name) in os.environ:
            raise SettingsError(f"{env_name(field_name)}: set either it or {file_var}, not both")
        try:
            value = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise SettingsError(f"{file_var}: cannot read {path}: {exc.strerror}") from exc
        return value, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(field, name)
            if value is not None:
                values[name] = value
        return values


class AetherSettings(BaseSettings):
    """Connection and security settings every service and job shares."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    env: Environment = Environment.DEVELOPMENT
    service_name: str = "aether"
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    log_json: bool = True

    database_url: SecretStr = SecretStr(DEV_DATABASE_URL)
    database_pool_size: int = Field(default=10, ge=1, le=200)
    redis_url: SecretStr = SecretStr(DEV_REDIS_URL)
    kafka_bootstrap: str = DEV_KAFKA_BOOTSTRAP
    kafka_security_protocol: str = Field(default="PLAINTEXT", pattern=r"^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$")

    jwt_issuer: str = "aether"
    jwt_audience: str = "aether-platform"
    jwt_public_key: SecretStr | None = None
    # The signing key is not here: only the issuer holds it (shared.auth.signing.TokenSigningSettings).
    jwt_ttl_s: int = Field(default=900, ge=30, le=86_400)

    key_provider: KeyProvider | None = None
    local_kek_file: Path | None = None

    readiness_timeout_s: float = Field(default=1.5, gt=0, le=30)
    # Reverse proxies whose X-Forwarded-For/-Proto are believed (addresses or CIDR blocks, JSON list in the
    # environment); empty: the peer address is the client, forwarded headers are ignored.
    trusted_proxies: list[str] = Field(default_factory=list, max_length=100)
    # Request bodies over this are refused with 413 (a route may set a smaller limit, ServiceSpec.body_limits).
    max_body_bytes: int = Field(default=1_048_576, ge=1_024, le=64 * 1_048_576)
    # Token buckets per principal and route class (shared.rate_limit, RELIABILITY S8): tokens per second and burst.
    # High enough for a busy strategy; a deployment tightens them. Off only where no Redis is shared (never prod).
    rate_limit_enabled: bool = True
    rate_limit_orders_per_s: float = Field(default=200.0, gt=0, le=100_000)
    rate_limit_orders_burst: int = Field(default=4_000, ge=1, le=1_000_000)
    rate_limit_reports_per_s: float = Field(default=50.0, gt=0, le=100_000)
    rate_limit_reports_burst: int = Field(default=500, ge=1, le=1_000_000)
    rate_limit_login_per_s: float = Field(default=20.0, gt=0, le=100_000)
    rate_limit_login_burst: int = Field(default=200, ge=1, le=1_000_000)
    rate_limit_default_per_s: float = Field(default=500.0, gt=0, le=100_000)
    rate_limit_default_burst: int = Field(default=5_000, ge=1, le=1_000_000)

    # Fields whose values are secrets and must never be development placeholders in production.
    secret_fields: ClassVar[tuple[str, ...]] = (
        "database_url",
        "redis_url",
        "jwt_public_key",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, SecretFileSource(settings_cls))

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        # An address or CIDR block each; "*" (trust anyone) is refused: a client would pick its own address.
        return [str(ipaddress.ip_network(entry.strip(), strict=False)) for entry in value]

    @model_validator(mode="after")
    def _production_guards(self) -> Self:
        if self.env is not Environment.PRODUCTION:
            return self
        if not self.rate_limit_enabled:
            raise ValueError(f"{env_name('rate_limit_enabled')}: rate limits cannot be turned off in production")
        for name in self.secret_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and is_placeholder(value.get_secret_value()):
                raise ValueError(f"{env_name(name)}: placeholder or development value refused in production")
        if self.key_provider is None:
            raise ValueError(f"{env_name('key_provider')}: a key provider is required in production")
        if self.key_provider is KeyProvider.LOCAL:
            raise ValueError(f"{env_name('key_provider')}: the local key provider is for development only")
        if self.jwt_public_key is None:
            raise ValueError(f"{env_name('jwt_public_key')}: required in production")
        self._require_tls()
        return self

    def _require_tls(self) -> None:
        db = urlsplit(self.database_url.get_secret_value())
        sslmode = parse_qs(db.query).get("sslmode", [""])[0]
        if sslmode not in {"require", "verify-ca", "verify-full"}:
            raise ValueError(f"{env_name('database_url')}: production needs sslmode=require or stricter")
        if not self.redis_url.get_secret_value().startswith("rediss://"):
            raise ValueError(f"{env_name('redis_url')}: production needs rediss:// (TLS)")
        if self.kafka_security_protocol not in {"SSL", "SASL_SSL"}:
            raise ValueError(f"{env_name('kafka_security_protocol')}: production needs SSL or SASL_SSL")


def is_placeholder(value: str) -> bool:
    lowered = value.lower()
    if any(marker in lowered for marker in PLACEHOLDER_MARKERS):
        return True
    return value in {DEV_DATABASE_URL, DEV_REDIS_URL}


SettingsT = TypeVar("SettingsT", bound=AetherSettings)


def load_settings(settings_cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build settings from the environment; raise ConfigurationError with one line naming the setting."""
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc)) from None
    except SettingsError as exc:
        raise ConfigurationError(str(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    location = [str(part) for part in first["loc"]]
    message = str(first["msg"]).removeprefix("Value error, ")
    if location:
        return f"{env_name(location[0])}: {message}"
    return message


def service_settings(
    settings: AetherSettings | None, settings_cls: type[SettingsT], from_environment: Callable[[], SettingsT]
) -> SettingsT:
    """A service's own settings from what `create_app()` was given.

    None reads the environment (through the service's cached getter); platform-wide settings are completed with
    the service's defaults (its `service_name` included); the service's own class is used as it is.
    """
    if settings is None:
        return from_environment()
    if isinstance(settings, settings_cls):
        return settings
    return settings_cls(**settings.model_dump(exclude={"service_name"}))
