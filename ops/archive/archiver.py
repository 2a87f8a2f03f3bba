"""The retention archiver: rows of a time series older than the policy leave PostgreSQL one UTC day at a time.

For each day: every archive part already in S3 for that day is verified (manifest MAC, chunk hashes and tags,
Parquet readable) and the rows it holds are deleted from PostgreSQL (nothing when they are gone already); the
rows still there are exported to Parquet (polars), sealed (ops/storage/sealed.py), uploaded as the next part, read
back and compared, and only then deleted, by key, in one transaction. The manifest is uploaded after the data and
is the commit marker: a part without one does not exist and is overwritten by the next run.

So a run killed anywhere loses nothing (a row leaves PostgreSQL only after a verified part holds it) and
duplicates nothing (a rerun first deletes what verified parts hold, then exports only the rest).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import polars as pl
import psycopg
from psycopg import sql

from ops.archive.tables import TimeSeries
from ops.backup.pg import connect
from ops.storage.errors import IntegrityError
from ops.storage.s3 import ObjectStore
from ops.storage.sealed import Manifest, Sealer, open_chunks, open_manifest
from shared.crypto import KeyProvider

KIND = "timeseries-archive"
PART = re.compile(r"part-(\d{4})\.manifest\.json$")

# PostgreSQL type oid -> Parquet column type (polars); anything else is kept as its text form.
_TYPES: dict[int, pl.DataType] = {
    16: pl.Boolean(),
    20: pl.Int64(),
    21: pl.Int32(),
    23: pl.Int32(),
    25: pl.String(),
    1043: pl.String(),
    701: pl.Float64(),
    1184: pl.Datetime("us", "UTC"),
}
NUMERIC = 1700


@dataclass(slots=True)
class DayResult:
    day: date
    resumed_rows: int = 0
    archived_rows: int = 0
    parts: list[str] = field(default_factory=list)
    sealed_bytes: int = 0


def _object_id(series: TimeSeries, day: date, number: int) -> str:
    return f"{series.table}/{day.isoformat()}/part-{number:04d}"


def part_keys(store: ObjectStore, series: TimeSeries, day: date, number: int) -> tuple[str, str]:
    """(data key, manifest key) of one archive part."""
    base = store.key("archive", series.table, day.isoformat(), f"part-{number:04d}")
    return f"{base}.parquet.sealed", f"{base}.manifest.json"


def existing_parts(store: ObjectStore, series: TimeSeries, day: date) -> list[int]:
    """Numbers of the parts of `day` that have a manifest (that is: that completed)."""
    prefix = store.key("archive", series.table, day.isoformat()) + "/"
    return sorted(int(m.group(1)) for item in store.listing(prefix) if (m := PART.search(item.key)))


def _schema(cursor: psycopg.Cursor[Any]) -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {}
    for column in cursor.description or []:
        if column.type_code == NUMERIC and column.precision and column.scale is not None:
            schema[column.name] = pl.Decimal(column.precision, column.scale)
        else:
            schema[column.name] = _TYPES.get(column.type_code, pl.String())
    return schema


def _plain(value: Any, dtype: pl.DataType) -> Any:
    if value is None or not isinstance(dtype, pl.String) or isinstance(value, str):
        return value
    return json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)


def _day_rows(conn: psycopg.Connection[Any], series: TimeSeries, day: date) -> pl.DataFrame:
    start = datetime.combine(day, time(), UTC)
    query = sql.SQL("SELECT * FROM {}.{} WHERE {} >= %s AND {} < %s ORDER BY {}").format(
        sql.Identifier(series.schema_name),
        sql.Identifier(series.table_name),
        sql.Identifier(series.time_column),
        sql.Identifier(series.time_column),
        sql.SQL(", ").join(sql.Identifier(column) for column in series.key_columns),
    )
    with conn.cursor() as cursor:
        cursor.execute(query, (start, start + timedelta(days=1)))
        schema = _schema(cursor)
        rows = [
            tuple(_plain(value, dtype) for value, dtype in zip(row, schema.values(), strict=True))
            for row in cursor.fetchall()
        ]
    return pl.DataFrame(rows, schema=schema, orient="row")


def _days(conn: psycopg.Connection[Any], series: TimeSeries, cutoff: datetime) -> list[date]:
    query = sql.SQL(
        "SELECT DISTINCT (date_trunc('day', {} AT TIME ZONE 'UTC'))::date FROM {}.{} WHERE {} < %s ORDER BY 1"
    ).format(
        sql.Identifier(series.time_column),
        sql.Identifier(series.schema_name),
        sql.Identifier(series.table_name),
        sql.Identifier(series.time_column),
    )
    return [row[0] for row in conn.execute(query, (cutoff,)).fetchall()]


def _delete_keys(conn: psycopg.Connection[Any], series: TimeSeries, frame: pl.DataFrame) -> int:
    """Delete the rows whose keys `frame` holds, in one transaction; the number deleted."""
    keys = series.key_columns
    columns = sql.SQL(", ").join(sql.Identifier(column) for column in keys)
    table = sql.SQL("{}.{}").format(sql.Identifier(series.schema_name), sql.Identifier(series.table_name))
    with conn.transaction():
        conn.execute(
            sql.SQL("CREATE TEMP TABLE archived_keys ON COMMIT DROP AS SELECT {} FROM {} WHERE false").format(
                columns, table
            )
        )
        with conn.cursor().copy(sql.SQL("COPY archived_keys ({}) FROM STDIN").format(columns)) as copy:
            for row in frame.select(keys).iter_rows():
                copy.write_row(row)
        match = sql.SQL(" AND ").join(
            sql.SQL("t.{} = a.{}").format(sql.Identifier(column), sql.Identifier(column)) for column in keys
        )
        deleted = conn.execute(sql.SQL("DELETE FROM {} t USING archived_keys a WHERE {}").format(table, match))
        return deleted.rowcount


def read_part(store: ObjectStore, provider: KeyProvider, series: TimeSeries, day: date, number: int) -> pl.DataFrame:
    """Download and verify one archive part; its rows."""
    data_key, manifest_key = part_keys(store, series, day, number)
    object_id = _object_id(series, day, number)
    manifest: Manifest = open_manifest(provider, store.get(manifest_key), object_id, store.url(manifest_key))
    plain = b"".join(open_chunks(manifest, io.BytesIO(store.get(data_key)), store.url(data_key)))
    try:
        frame = pl.read_parquet(io.BytesIO(plain))
    except Exception as exc:  # polars raises several error types for a bad file
        raise IntegrityError(f"{store.url(data_key)}: not readable Parquet ({type(exc).__name__})") from None
    if frame.height != int(manifest.meta["rows"]):
        raise IntegrityError(f"{store.url(data_key)}: {frame.height} rows, the manifest says {manifest.meta['rows']}")
    return frame


def _upload_part(
    store: ObjectStore,
    provider: KeyProvider,
    series: TimeSeries,
    day: date,
    number: int,
    frame: pl.DataFrame,
    chunk_bytes: int,
    part_bytes: int,
) -> int:
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd")
    object_id = _object_id(series, day, number)
    sealer = Sealer(provider, object_id, chunk_bytes)
    data_key, manifest_key = part_keys(store, series, day, number)
    sealed = store.upload_stream(data_key, sealer.seal([buffer.getvalue()]), part_bytes)
    meta = {"table": series.table, "day": day.isoformat(), "rows": frame.height, "columns": frame.columns}
    store.put(manifest_key, sealer.manifest(KIND, meta))
    return sealed


def archive_day(
    conn: psycopg.Connection[Any],
    store: ObjectStore,
    provider: KeyProvider,
    series: TimeSeries,
    day: date,
    *,
    chunk_bytes: int,
    part_bytes: int,
    log: Callable[[str], None],
) -> DayResult:
    """Archive one day of `series` (see the module docstring for why this order is safe at any kill point)."""
    result = DayResult(day)
    parts = existing_parts(store, series, day)
    for number in parts:
        result.resumed_rows += _delete_keys(conn, series, read_part(store, provider, series, day, number))
        log(f"{series.table} {day}: part {number} verified, its rows deleted")
    frame = _day_rows(conn, series, day)
    conn.rollback()
    if frame.height == 0:
        return result
    number = (parts[-1] if parts else 0) + 1
    result.sealed_bytes += _upload_part(store, provider, series, day, number, frame, chunk_bytes, part_bytes)
    log(f"{series.table} {day}: part {number} uploaded ({frame.height} rows)")
    back = read_part(store, provider, series, day, number)
    if not back.equals(frame):
        raise IntegrityError(f"{series.table} {day}: part {number} read back differs from the rows exported")
    log(f"{series.table} {day}: part {number} read back and verified")
    result.archived_rows = _delete_keys(conn, series, back)
    result.parts.append(part_keys(store, series, day, number)[0])
    log(f"{series.table} {day}: {result.archived_rows} rows deleted from PostgreSQL")
    return result


def archive_table(
    database_url: str,
    store: ObjectStore,
    provider: KeyProvider,
    series: TimeSeries,
    cutoff: datetime,
    *,
    chunk_bytes: int,
    part_bytes: int,
    log: Callable[[str], None] = lambda _: None,
) -> Iterator[DayResult]:
    """Archive every whole UTC day of `series` before `cutoff` (rounded down to midnight), oldest first."""
    cutoff = datetime.combine(cutoff.astimezone(UTC).date(), time(), UTC)
    with connect(database_url) as conn:
        days = _days(conn, series, cutoff)
        conn.rollback()
        for day in days:
            yield archive_day(
                conn, store, provider, series, day, chunk_bytes=chunk_bytes, part_bytes=part_bytes, log=log
            )
