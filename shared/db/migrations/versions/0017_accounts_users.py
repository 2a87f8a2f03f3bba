"""Schema accounts: trading accounts, users, grants, refresh tokens, TOTP, encrypted exchange credentials (issue 5).

Revision ID: 0017_accounts_users
Revises: 0016_hedge_state
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0017_accounts_users"
down_revision = "0016_hedge_state"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
S = "accounts"


def _created() -> sa.Column[sa.DateTime]:
    return sa.Column("created_at", TS, nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    """Users, trading accounts, grants, refresh-token families, service identities, exchange credentials."""
    op.create_table(
        "users",
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("username", sa.Text, nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("roles", ARRAY(sa.Text), nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="active"),
        sa.Column("totp_secret", sa.LargeBinary, nullable=True),  # envelope-encrypted (shared.crypto)
        sa.Column("totp_confirmed_at", TS, nullable=True),
        _created(),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('active', 'disabled')", name="user_status"),
        sa.CheckConstraint("username = lower(username)", name="username_lower_case"),
        schema=S,
    )
    op.create_table(
        "trading_accounts",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("venue", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="active"),
        sa.Column("owner_user_id", sa.Text, sa.ForeignKey(f"{S}.users.user_id"), nullable=True),
        _created(),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("kind IN ('company', 'director')", name="account_kind"),
        sa.CheckConstraint("venue IN ('paper', 'kraken', 'binance', 'coinbase')", name="account_venue"),
        sa.CheckConstraint("status IN ('active', 'suspended', 'closed')", name="account_status"),
        schema=S,
    )
    op.create_table(
        "grants",
        sa.Column("user_id", sa.Text, sa.ForeignKey(f"{S}.users.user_id"), primary_key=True),
        sa.Column("account_id", sa.Text, sa.ForeignKey(f"{S}.trading_accounts.account_id"), primary_key=True),
        sa.Column("granted_by", sa.Text, nullable=False),
        _created(),
        schema=S,
    )
    op.create_index("ix_grants_account", "grants", ["account_id"], schema=S)
    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.Text, primary_key=True),  # SHA-256 of the opaque token; the token is never stored
        sa.Column("family_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, sa.ForeignKey(f"{S}.users.user_id"), nullable=False),
        sa.Column("access_jti", sa.Text, nullable=False),
        sa.Column("amr", ARRAY(sa.Text), nullable=False),
        sa.Column("auth_time", TS, nullable=False),
        _created(),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("rotated_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        schema=S,
    )
    op.create_index("ix_refresh_tokens_family", "refresh_tokens", ["family_id"], schema=S)
    op.create_table(
        "service_identities",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("secret_hash", sa.Text, nullable=False),
        sa.Column("scopes", ARRAY(sa.Text), nullable=False),
        sa.Column("accounts", ARRAY(sa.Text), nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="active"),
        _created(),
        schema=S,
    )
    op.create_table(
        "exchange_credentials",
        sa.Column("account_id", sa.Text, sa.ForeignKey(f"{S}.trading_accounts.account_id"), primary_key=True),
        sa.Column("key_id", sa.Text, nullable=False, unique=True),
        sa.Column("api_key", sa.LargeBinary, nullable=False),  # envelope-encrypted
        sa.Column("api_secret", sa.LargeBinary, nullable=False),  # envelope-encrypted
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("kek_id", sa.Text, nullable=False),
        _created(),
        sa.Column("rotated_at", TS, nullable=True),
        schema=S,
    )


def downgrade() -> None:
    """Drop the tables in reverse dependency order."""
    for table in (
        "exchange_credentials",
        "service_identities",
        "refresh_tokens",
        "grants",
        "trading_accounts",
        "users",
    ):
        op.drop_table(table, schema=S)
