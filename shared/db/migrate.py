"""Run the platform's single Alembic migration tree programmatically."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from shared.db.engine import sync_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# One schema per service, plus the platform's own.
SERVICE_SCHEMAS = ("oms", "risk", "hedge", "accounts", "hitl", "reports", "analytics", "backtest")
PLATFORM_SCHEMAS = ("audit", "marketdata", "ml")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would eat the '%' of URL-encoded passwords.
    config.set_main_option("sqlalchemy.url", sync_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision` (idempotent)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)
