"""`aether ops refresh-aggregates`: refresh the daily rollups of `shared.db.rollups`, incrementally, idempotently.

A rollup is up to date when its source (append-only) holds as many rows as at the last refresh. Otherwise a
continuous aggregate (TimescaleDB) is refreshed from the first day touched by rows stored since the last refresh
(`refresh_continuous_aggregate(view, day, NULL)`), and a materialized view (plain PostgreSQL) is refreshed whole
(PostgreSQL has no partial refresh; CONCURRENTLY once it holds data, so readers are never blocked). Each run logs
and records (`reports.rollup_refreshes`) what it did. Rows stored within `OVERLAP` before the last refresh count
as new for the window: a transaction that began before the refresh may commit after it with an older
`received_at`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from shared.db.rollups import ROLLUPS, Rollup
from shared.observability.logging import get_logger

log = get_logger(__name__)

OVERLAP = timedelta(minutes=5)
REFRESHES_TABLE = "reports.rollup_refreshes"


class RefreshMode(StrEnum):
    CONTINUOUS = "continuous_aggregate"
    MATERIALIZED = "materialized_view"


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """What one rollup's refresh did; `window_start` None and `refreshed` False: it was up to date."""

    view: str
    mode: RefreshMode
    refreshed: bool
    window_start: datetime | None
    rows: int


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _identifier(dotted: str) -> sql.Identifier:
    return sql.Identifier(*dotted.split("."))


def _is_continuous(conn: psycopg.Connection[tuple[object, ...]], view: str) -> bool:
    installed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    if installed is None:
        return False
    schema, name = view.split(".")
    query = "SELECT 1 FROM timescaledb_information.continuous_aggregates WHERE view_schema = %s AND view_name = %s"
    return conn.execute(query, (schema, name)).fetchone() is not None


def _first_touched(
    conn: psycopg.Connection[tuple[object, ...]], rollup: Rollup, since: datetime | None
) -> datetime | None:
    """The earliest event time among rows stored since `since` (all rows when never refreshed)."""
    query = sql.SQL("SELECT min({time}) FROM {source}").format(
        time=sql.Identifier(rollup.time_column), source=_identifier(rollup.source)
    )
    params: tuple[object, ...] = ()
    if since is not None:
        query = sql.SQL("{query} WHERE {received} > %s").format(
            query=query, received=sql.Identifier(rollup.received_column)
        )
        params = (since - OVERLAP,)
    row = conn.execute(query, params).fetchone()
    value = None if row is None else row[0]
    return value if isinstance(value, datetime) else None


def _refresh_one(conn: psycopg.Connection[tuple[object, ...]], rollup: Rollup) -> RefreshResult:
    query = f"SELECT refreshed_at, source_rows FROM {REFRESHES_TABLE} WHERE view_name = %s"  # noqa: S608 - constant
    row = conn.execute(query, (rollup.view,)).fetchone()
    last = row[0] if row is not None and isinstance(row[0], datetime) else None
    started = conn.execute(sql.SQL("SELECT now(), count(*) FROM {}").format(_identifier(rollup.source))).fetchone()
    started_at, source_rows = (None, 0) if started is None else (started[0], int(str(started[1])))
    refreshed = row is None or row[1] != source_rows
    first = _first_touched(conn, rollup, last) if refreshed else None
    mode = RefreshMode.CONTINUOUS if _is_continuous(conn, rollup.view) else RefreshMode.MATERIALIZED
    view = _identifier(rollup.view)
    if refreshed and mode is RefreshMode.CONTINUOUS:
        window_start = None if first is None else first.replace(hour=0, minute=0, second=0, microsecond=0)
        conn.execute(
            sql.SQL("CALL refresh_continuous_aggregate({}, %s, NULL)").format(sql.Literal(rollup.view)), (window_start,)
        )
    elif refreshed:
        schema, name = rollup.view.split(".")
        populated = conn.execute(
            "SELECT ispopulated FROM pg_matviews WHERE schemaname = %s AND matviewname = %s", (schema, name)
        ).fetchone()
        concurrently = sql.SQL("CONCURRENTLY ") if populated is not None and populated[0] else sql.SQL("")
        conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}{}").format(concurrently, view))
    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(view)).fetchone()
    rows = int(count[0]) if count is not None and isinstance(count[0], int) else 0
    if refreshed:
        conn.execute(
            f"INSERT INTO {REFRESHES_TABLE} (view_name, source_rows, window_start, rows, refreshed_at) "  # noqa: S608 - constant table name
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (view_name) DO UPDATE SET source_rows = EXCLUDED.source_rows, "
            "window_start = EXCLUDED.window_start, rows = EXCLUDED.rows, refreshed_at = EXCLUDED.refreshed_at",
            (rollup.view, source_rows, first, rows, started_at),
        )
    result = RefreshResult(rollup.view, mode, refreshed, first if refreshed else None, rows)
    log.info(
        "aggregate_refreshed" if refreshed else "aggregate_up_to_date",
        view=rollup.view,
        mode=mode.value,
        window_start=None if result.window_start is None else result.window_start.isoformat(),
        rows=rows,
    )
    return result


def refresh_aggregates(database_url: str, rollups: Sequence[Rollup] = ROLLUPS) -> list[RefreshResult]:
    """Refresh every rollup that has new source rows (autocommit: a continuous aggregate refuses a transaction)."""
    with psycopg.connect(_libpq(database_url), autocommit=True) as conn:
        return [_refresh_one(conn, rollup) for rollup in rollups]
