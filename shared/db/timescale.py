"""TimescaleDB detection: the same migration makes a hypertable where the extension exists."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection


def timescale_available(connection: Connection) -> bool:
    """True when the server can load the timescaledb extension."""
    query = text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return connection.execute(query).scalar() is not None


def timescale_enabled(connection: Connection) -> bool:
    query = text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    return connection.execute(query).scalar() is not None


def make_time_series(connection: Connection, table: str, time_column: str, chunk_interval: str = "1 day") -> bool:
    """Turn `schema.table` into a hypertable when TimescaleDB is available; return whether it did."""
    if not timescale_available(connection):
        return False
    connection.execute(text("CREATE EXTENSION IF NOT EXISTS timescaledb"))
    connection.execute(
        text(
            "SELECT create_hypertable(CAST(:table AS regclass), :column, chunk_time_interval => CAST(:interval AS interval), if_not_exists => TRUE)"
        ),
        {"table": table, "column": time_column, "interval": chunk_interval},
    )
    return True


def is_hypertable(connection: Connection, schema: str, table: str) -> bool:
    if not timescale_enabled(connection):
        return False
    query = text(
        "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_schema = :schema AND hypertable_name = :table"
    )
    return connection.execute(query, {"schema": schema, "table": table}).scalar() is not None
