"""Helpers for hand-written migrations shared by several services."""

from __future__ import annotations

from alembic import op

from shared.events.tables import event_tables


def create_event_tables(schema: str) -> None:
    """Create `<schema>.outbox` and `<schema>.inbox`."""
    tables = event_tables(schema)
    bind = op.get_bind()
    tables.metadata.create_all(bind, tables=[tables.outbox, tables.inbox])


def drop_event_tables(schema: str) -> None:
    tables = event_tables(schema)
    tables.metadata.drop_all(op.get_bind(), tables=[tables.inbox, tables.outbox])
