"""Outbox and inbox tables; every service has its own pair in its own schema."""

from __future__ import annotations

from functools import cache

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

from shared.db.base import NAMING_CONVENTION


class EventTables:
    """The outbox and inbox of one schema, as SQLAlchemy Core tables."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.metadata = sa.MetaData(schema=schema, naming_convention=NAMING_CONVENTION)
        self.outbox = sa.Table(
            "outbox",
            self.metadata,
            *outbox_columns(),
            sa.Index("ix_outbox_unsent", "id", postgresql_where=sa.text("sent_at IS NULL")),
        )
        self.inbox = sa.Table("inbox", self.metadata, *inbox_columns())


def outbox_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("headers", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    ]


def inbox_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("consumer", sa.Text, primary_key=True),
        sa.Column("event_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    ]


@cache
def event_tables(schema: str) -> EventTables:
    return EventTables(schema)
