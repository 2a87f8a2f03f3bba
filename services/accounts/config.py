"""Settings of the accounts service."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from shared.config import AetherSettings, load_settings


class AccountsSettings(AetherSettings):
    service_name: str = "accounts"

    # Refresh tokens: opaque, stored hashed, rotated on every use.
    refresh_ttl_s: int = Field(default=8 * 3600, ge=60, le=30 * 86_400)
    # Login rate limits (Redis counters of failures over a window); wrong TOTP codes count too.
    login_max_failures_per_user: int = Field(default=5, ge=1, le=1_000)
    login_max_failures_per_ip: int = Field(default=50, ge=1, le=100_000)
    login_window_s: int = Field(default=900, ge=1, le=86_400)
    # A director without confirmed TOTP gets only this short token, good for /auth/totp/* alone.
    enrollment_ttl_s: int = Field(default=300, ge=30, le=3_600)
    totp_issuer: str = "Aether"
    # Kubernetes-mounted credentials: <dir>/<account_id>/api_key and api_secret (AETHER_ACCOUNT_SECRETS_DIR).
    account_secrets_dir: Path | None = None


@lru_cache(maxsize=1)
def get_settings() -> AccountsSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(AccountsSettings)
