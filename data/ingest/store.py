"""Every SQL statement that writes or checks the `marketdata` schema (tables: shared/db/marketdata.py).

Writers (the sink, the backfills, the feature jobs) call these with their own session or connection and commit
in their own unit of work; nothing here commits, except `refresh_aggregates`, which needs its own autocommit
connection. The names are stable:

- `insert_trades(db, trades) -> int`: idempotent (ON CONFLICT DO NOTHING), returns the rows actually inserted.
- `insert_book_snapshots(db, snapshots) -> int`: idempotent on venue + instrument + time + sequence.
- `quarantine(db, entries) -> int`: idempotent on source + position + reason.
- `claim_events(db, consumer, claims) -> set[UUID]`: the `marketdata.inbox` claim of a batch; returns the new ones.
- `prune_inbox(db, before) -> int`: forget inbox rows processed before `before` (older than the topics' retention).
- `refresh_aggregates(engine) -> list[Refreshed]`: the candle views, incremental where TimescaleDB is enabled.
- `duplicate_trades`, `out_of_order_trades`, `time_gaps`, `id_gaps`, `quarantine_duplicate_trades`: data quality.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from shared.db import marketdata as md
from shared.marketdata import BookSnapshot, Level, Trade

Executor = AsyncSession | AsyncConnection


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    """A book snapshot to store: the top `depth` levels per side, best first."""

    venue: str
    instrument: str
    taken_at: datetime
    sequence: int
    reason: str
    bids: Sequence[Level]
    asks: Sequence[Level]
    checksum: int | None = None

    @classmethod
    def of(cls, book: BookSnapshot, reason: str, depth: int) -> SnapshotRow:
        """The stored form of a feed snapshot (`reason` "snapshot" or "interval"), cut to `depth` levels."""
        return cls(book.venue, book.symbol, book.timestamp, book.sequence, reason, book.bids[:depth], book.asks[:depth])


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """Something that could not be stored: where it came from, where in the source, why, and its raw bytes."""

    source: str
    position: str
    reason: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class Refreshed:
    """One refreshed candle view and how long it took."""

    view: str
    incremental: bool
    elapsed_s: float


_TRADE_COLUMNS = {
    "venue": "text",
    "instrument": "text",
    "trade_id": "text",
    "traded_at": "timestamptz",
    "price": "numeric",
    "quantity": "numeric",
    "side": "text",
}
# One statement with one array per column (unnest): the query text stays small and prepared whatever the batch
# size, which is several times faster than a multi-row VALUES list of 7 parameters per trade.
_INSERT_TRADES = sa.text(
    f"INSERT INTO {md.SCHEMA}.trades ({', '.join(_TRADE_COLUMNS)}) "  # noqa: S608 - constants only
    f"SELECT * FROM unnest({', '.join(f'CAST(:{name} AS {kind}[])' for name, kind in _TRADE_COLUMNS.items())}) "
    "ON CONFLICT DO NOTHING RETURNING 1"
)


def trade_values(trade: Trade) -> dict[str, Any]:
    """The `marketdata.trades` row of a trade message."""
    return {
        "venue": trade.venue,
        "instrument": trade.symbol,
        "trade_id": trade.trade_id,
        "traded_at": trade.timestamp,
        "price": trade.price,
        "quantity": trade.qty,
        "side": str(trade.side),
    }


def _levels(levels: Sequence[Level]) -> list[list[str]]:
    return [[str(level.price), str(level.qty)] for level in levels]


async def insert_trades(db: Executor, trades: Iterable[Trade]) -> int:
    """Insert trades, skipping any already stored (same venue, instrument, trade id and time); return how many were new."""
    rows = [trade_values(trade) for trade in trades]
    if not rows:
        return 0
    columns = {name: [row[name] for row in rows] for name in _TRADE_COLUMNS}
    return len((await db.execute(_INSERT_TRADES, columns)).all())


async def _insert_many(db: Executor, statement: Any, rows: list[dict[str, Any]]) -> int:
    # executemany with one cached statement: SQLAlchemy batches the rows into multi-row INSERTs itself
    # ("insertmanyvalues") and still returns every inserted row, so ON CONFLICT DO NOTHING counts what was new.
    if not rows:
        return 0
    return len((await db.execute(statement, rows)).all())


async def insert_book_snapshots(db: Executor, snapshots: Iterable[SnapshotRow]) -> int:
    """Insert book snapshots, skipping any already stored; return how many were new."""
    rows = [
        {
            "venue": row.venue,
            "instrument": row.instrument,
            "taken_at": row.taken_at,
            "sequence": row.sequence,
            "reason": row.reason,
            "depth": max(len(row.bids), len(row.asks), 1),
            "bids": _levels(row.bids),
            "asks": _levels(row.asks),
            "checksum": row.checksum,
        }
        for row in snapshots
    ]
    table = md.book_snapshots
    return await _insert_many(db, insert(table).on_conflict_do_nothing().returning(table.c.sequence), rows)


async def quarantine(db: Executor, entries: Iterable[QuarantineEntry]) -> int:
    """Keep what could not be stored, once per source + position + reason; return how many entries were new."""
    rows = [{"source": e.source, "position": e.position, "reason": e.reason, "raw": e.raw} for e in entries]
    table = md.quarantine
    return await _insert_many(db, insert(table).on_conflict_do_nothing().returning(table.c.id), rows)


@dataclass(frozen=True, slots=True)
class InboxClaim:
    """One event a consumer is about to apply, and where it was read."""

    event_id: uuid.UUID
    topic: str
    partition: int
    offset: int


# The inbox claim of a whole batch in one statement (arrays per column, like _INSERT_TRADES).
_CLAIM = sa.text(
    f'INSERT INTO {md.SCHEMA}.inbox (consumer, event_id, topic, partition, "offset") '  # noqa: S608 - constants
    "SELECT :consumer, * FROM unnest(CAST(:event_id AS uuid[]), CAST(:topic AS text[]), CAST(:partition AS int[]), "
    "CAST(:offset AS bigint[])) ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id"
)


async def claim_events(db: Executor, consumer: str, claims: Iterable[InboxClaim]) -> set[uuid.UUID]:
    """Record in `marketdata.inbox` that `consumer` applies these events (in the caller's transaction); return the
    event ids it had not applied before: only those may be applied."""
    rows = list(claims)
    if not rows:
        return set()
    columns = {
        "event_id": [c.event_id for c in rows],
        "topic": [c.topic for c in rows],
        "partition": [c.partition for c in rows],
        "offset": [c.offset for c in rows],
    }
    result = await db.execute(_CLAIM, {"consumer": consumer, **columns})
    return set(result.scalars().all())


async def prune_inbox(db: Executor, before: datetime) -> int:
    """Delete `marketdata.inbox` rows processed before `before`; return how many. Safe once no record that old
    can come again: `before` must lie beyond the topics' retention (Kafka's default: 7 days)."""
    statement = sa.text(f"DELETE FROM {md.SCHEMA}.inbox WHERE processed_at < :before")  # noqa: S608 - constants
    result = await db.execute(statement, {"before": before})
    return int(getattr(result, "rowcount", 0))


async def quarantined(db: Executor, *, source: str | None = None, limit: int = 1_000) -> list[sa.Row[Any]]:
    """Quarantine entries, oldest first, optionally of one source."""
    table = md.quarantine
    query = sa.select(table).order_by(table.c.id).limit(limit)
    if source is not None:
        query = query.where(table.c.source == source)
    return list((await db.execute(query)).all())


async def timescale_enabled(db: Executor) -> bool:
    """True when the timescaledb extension is installed in this database."""
    query = sa.text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    return (await db.execute(query)).scalar() is not None


async def refresh_aggregates(engine: AsyncEngine, intervals: Iterable[str] | None = None) -> list[Refreshed]:
    """Refresh the candle views (all, or the named intervals) on an autocommit connection; say what was refreshed."""
    views = [md.CANDLE_VIEWS[interval] for interval in (intervals or md.CANDLE_VIEWS)]
    done: list[Refreshed] = []
    async with engine.connect() as connection:
        conn = await connection.execution_options(isolation_level="AUTOCOMMIT")
        timescale = await timescale_enabled(conn)
        for view in views:
            started = time.perf_counter()
            await conn.execute(sa.text(md.refresh_candle_view_sql(view, timescale=timescale)))
            done.append(Refreshed(view.name, timescale, time.perf_counter() - started))
    return done


# Data quality. Each takes an optional venue / instrument / time range and reads `marketdata.trades`.


@dataclass(frozen=True, slots=True)
class Scope:
    """Which trades a check reads: all by default."""

    venue: str | None = None
    instrument: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses, params = ["TRUE"], {}
        for column, op, key, value in (
            ("venue", "=", "venue", self.venue),
            ("instrument", "=", "instrument", self.instrument),
            ("traded_at", ">=", "start", self.start),
            ("traded_at", "<", "end", self.end),
        ):
            if value is not None:
                clauses.append(f"{column} {op} :{key}")
                params[key] = value
        return " AND ".join(clauses), params


_TRADES = f"{md.SCHEMA}.trades"


@dataclass(frozen=True, slots=True)
class StoredTrade:
    """A trade row as stored (for reports and the quarantine)."""

    venue: str
    instrument: str
    trade_id: str
    traded_at: datetime
    price: Decimal
    quantity: Decimal
    side: str

    def key(self) -> str:
        """The row's position: venue/instrument/trade id@time."""
        return f"{self.venue}/{self.instrument}/{self.trade_id}@{self.traded_at.isoformat()}"

    def raw(self) -> bytes:
        """The row as JSON (decimals as strings)."""
        return json.dumps(
            {
                "venue": self.venue,
                "instrument": self.instrument,
                "trade_id": self.trade_id,
                "traded_at": self.traded_at.isoformat(),
                "price": str(self.price),
                "quantity": str(self.quantity),
                "side": self.side,
            },
            sort_keys=True,
        ).encode()


async def duplicate_trades(db: Executor, scope: Scope) -> list[tuple[StoredTrade, datetime]]:
    """Trades whose venue + instrument + trade id was stored more than once: every copy after the first (by time),
    with the time of the first."""
    where, params = scope.where()
    query = sa.text(
        "SELECT venue, instrument, trade_id, traded_at, price, quantity, side, first_at FROM ("  # noqa: S608 - fixed names; values are bind parameters
        " SELECT *, row_number() OVER w AS copy, min(traded_at) OVER w AS first_at"
        f" FROM {_TRADES} WHERE {where}"
        " WINDOW w AS (PARTITION BY venue, instrument, trade_id ORDER BY traded_at)"
        ") t WHERE copy > 1 ORDER BY venue, instrument, trade_id, traded_at"
    )
    rows = (await db.execute(query, params)).all()
    return [(StoredTrade(*row[:7]), row[7]) for row in rows]


async def delete_trade(db: Executor, trade: StoredTrade) -> int:
    """Delete one stored trade row (by its full key); return the rows deleted."""
    table = md.trades
    statement = sa.delete(table).where(
        table.c.venue == trade.venue,
        table.c.instrument == trade.instrument,
        table.c.trade_id == trade.trade_id,
        table.c.traded_at == trade.traded_at,
    )
    result = await db.execute(statement)
    return int(getattr(result, "rowcount", 0))


async def out_of_order_trades(db: Executor, scope: Scope, limit: int = 100) -> tuple[int, list[StoredTrade]]:
    """Trades stamped earlier than the trade before them in trade-id order (ids with a numeric tail, per prefix):
    the count and the first `limit`."""
    where, params = scope.where()
    query = sa.text(
        "WITH ordered AS ("  # noqa: S608 - fixed names; values are bind parameters
        " SELECT venue, instrument, trade_id, traded_at, price, quantity, side,"
        "  lag(traded_at) OVER (PARTITION BY venue, instrument, regexp_replace(trade_id, '[0-9]+$', '')"
        "   ORDER BY substring(trade_id FROM '([0-9]+)$')::numeric) AS previous_at"
        f" FROM {_TRADES} WHERE {where} AND trade_id ~ '[0-9]+$')"
        " SELECT venue, instrument, trade_id, traded_at, price, quantity, side, count(*) OVER () AS total"
        " FROM ordered WHERE traded_at < previous_at ORDER BY venue, instrument, traded_at LIMIT :limit"
    )
    rows = (await db.execute(query, {**params, "limit": limit})).all()
    return (int(rows[0][7]) if rows else 0), [StoredTrade(*row[:7]) for row in rows]


@dataclass(frozen=True, slots=True)
class Gap:
    """A hole in one instrument's trades: between two times, or between two trade ids."""

    venue: str
    instrument: str
    after: str
    before: str
    size: str


async def time_gaps(db: Executor, scope: Scope, max_gap: timedelta, limit: int = 100) -> tuple[int, list[Gap]]:
    """Consecutive trades of one venue + instrument further apart than `max_gap`: the count and the first `limit`."""
    where, params = scope.where()
    query = sa.text(
        "WITH spaced AS ("  # noqa: S608 - fixed names; values are bind parameters
        " SELECT venue, instrument, traded_at,"
        "  lead(traded_at) OVER (PARTITION BY venue, instrument ORDER BY traded_at) AS next_at"
        f" FROM {_TRADES} WHERE {where})"
        " SELECT venue, instrument, traded_at, next_at, count(*) OVER () FROM spaced"
        " WHERE next_at - traded_at > :max_gap ORDER BY venue, instrument, traded_at LIMIT :limit"
    )
    rows = (await db.execute(query, {**params, "max_gap": max_gap, "limit": limit})).all()
    gaps = [Gap(r[0], r[1], r[2].isoformat(), r[3].isoformat(), str(r[3] - r[2])) for r in rows]
    return (int(rows[0][4]) if rows else 0), gaps


async def id_gaps(db: Executor, scope: Scope, limit: int = 100) -> tuple[int, list[Gap]]:
    """Missing trade ids (numeric tails that skip, per venue, instrument and id prefix): gap count and the first `limit`."""
    where, params = scope.where()
    query = sa.text(
        "WITH numbered AS ("  # noqa: S608 - fixed names; values are bind parameters
        " SELECT DISTINCT venue, instrument, regexp_replace(trade_id, '[0-9]+$', '') AS prefix,"
        "  substring(trade_id FROM '([0-9]+)$')::numeric AS number"
        f" FROM {_TRADES} WHERE {where} AND trade_id ~ '[0-9]+$'),"
        " stepped AS (SELECT *, lead(number) OVER (PARTITION BY venue, instrument, prefix ORDER BY number) AS next"
        " FROM numbered)"
        " SELECT venue, instrument, prefix, number, next, count(*) OVER () FROM stepped"
        " WHERE next - number > 1 ORDER BY venue, instrument, prefix, number LIMIT :limit"
    )
    rows = (await db.execute(query, {**params, "limit": limit})).all()
    gaps = [Gap(r[0], r[1], f"{r[2]}{r[3]}", f"{r[2]}{r[4]}", f"{r[4] - r[3] - 1} missing") for r in rows]
    return (int(rows[0][5]) if rows else 0), gaps
