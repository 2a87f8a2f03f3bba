"""Settings of the accounts service."""

from __future__ import annotations

from functools import lru_cache

from shared.config import AetherSettings, load_settings


class AccountsSettings(AetherSettings):
    service_name: str = "accounts"


@lru_cache(maxsize=1)
def get_settings() -> AccountsSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(AccountsSettings)
