"""Settings of the accounts service."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from shared.auth.signing import TokenSigningSettings
from shared.config import load_settings


class AccountsSettings(TokenSigningSettings):
    service_name: str = "accounts"

    # Refresh tokens: opaque, stored hashed, rotated on every use.
    refresh_ttl_s: int = Field(default=8 * 3600, ge=60, le=30 * 86_400)
    # Credential rate limits (Redis counters of failures over a window, see ratelimit.py); wrong TOTP codes count.
    # Per (account name, client): the lockout; per client: spraying; per name over all clients: past the
    # slowdown, only clients without a failure on that name may try.
    login_max_failures_per_user: int = Field(default=5, ge=1, le=1_000)
    login_max_failures_per_ip: int = Field(default=50, ge=1, le=100_000)
    login_user_slowdown_after: int = Field(default=20, ge=1, le=100_000)
    login_window_s: int = Field(default=900, ge=1, le=86_400)
    # Argon2 runs in worker threads: this many at once, at most `password_max_pending` admitted (then 503).
    password_workers: int = Field(default=2, ge=1, le=64)
    password_max_pending: int = Field(default=32, ge=1, le=10_000)
    # Service identities' tokens (client credentials): short-lived, the workers fetch a new one before expiry.
    service_token_ttl_s: int = Field(default=300, ge=30, le=3_600)
    # A director without confirmed TOTP gets only this short token, good for /auth/totp/* alone.
    enrollment_ttl_s: int = Field(default=300, ge=30, le=3_600)
    totp_issuer: str = "Aether"
    # Kubernetes-mounted credentials: <dir>/<account_id>/api_key and api_secret (AETHER_ACCOUNT_SECRETS_DIR).
    account_secrets_dir: Path | None = None


@lru_cache(maxsize=1)
def get_settings() -> AccountsSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(AccountsSettings)
