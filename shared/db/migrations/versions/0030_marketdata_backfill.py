"""Schema `marketdata`: backfill checkpoints, the CoinGecko price series and hourly sentiment features.

A checkpoint is one row per source, subject (coin/vs or symbol) and requested range; its cursor is written in the
same transaction as the rows of the page it follows, so a killed backfill resumes without gaps or duplicates.

Revision ID: 0030_marketdata_backfill
Revises: 0029_marketdata_store
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db.base import Money
from shared.db.timescale import make_time_series

revision = "0030_marketdata_backfill"
down_revision = "0029_marketdata_store"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backfill_checkpoints",
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("range_key", sa.Text, nullable=False),
        sa.Column("cursor", sa.Text, nullable=False),
        sa.Column("pages", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("rows_written", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("gaps", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("source IN ('coingecko', 'kraken')", name="source"),
        sa.PrimaryKeyConstraint("source", "subject", "range_key", name="pk_backfill_checkpoints"),
        schema="marketdata",
    )
    op.create_table(
        "coingecko_prices",
        sa.Column("coin", sa.Text, nullable=False),
        sa.Column("vs", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("price", Money, nullable=False),
        sa.Column("market_cap", Money, nullable=True),
        sa.Column("volume", Money, nullable=True),
        sa.CheckConstraint("price > 0", name="price_positive"),
        sa.CheckConstraint("market_cap >= 0 AND volume >= 0", name="not_negative"),
        sa.PrimaryKeyConstraint("coin", "vs", "at", name="pk_coingecko_prices"),
        schema="marketdata",
    )
    make_time_series(op.get_bind(), "marketdata.coingecko_prices", "at", chunk_interval="30 days")
    op.create_table(
        "sentiment_features",
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("cashtag", sa.Text, nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("post_count", sa.BigInteger, nullable=False),
        sa.Column("scored_posts", sa.BigInteger, nullable=False),
        sa.Column("mean_compound", Money, nullable=True),
        sa.Column("positive_share", Money, nullable=True),
        sa.Column("negative_share", Money, nullable=True),
        sa.CheckConstraint("post_count >= 0 AND scored_posts >= 0", name="counts"),
        sa.PrimaryKeyConstraint("source", "cashtag", "bucket_start", name="pk_sentiment_features"),
        schema="marketdata",
    )
    make_time_series(op.get_bind(), "marketdata.sentiment_features", "bucket_start", chunk_interval="30 days")


def downgrade() -> None:
    op.drop_table("sentiment_features", schema="marketdata")
    op.drop_table("coingecko_prices", schema="marketdata")
    op.drop_table("backfill_checkpoints", schema="marketdata")
