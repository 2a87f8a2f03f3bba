"""HTTP routes of the analytics service (thin: auth, parse, call the service, return)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict

from data.features import store as feature_store
from data.features.definitions import BAR_SECONDS, FEATURES
from services.analytics.errors import InvalidQuery
from services.analytics.schemas import (
    AnomalyRead,
    BookSnapshotRead,
    CandleInterval,
    CandleRead,
    Correlations,
    MarketDataHealth,
    ReturnsInterval,
    TradeRead,
)
from services.analytics.service import (
    CANDLE_WINDOWS,
    CORRELATION_WINDOWS,
    SNAPSHOT_WINDOWS,
    TRADE_WINDOWS,
    MarketDataQueries,
    resolve_range,
)
from shared.auth.tokens import ALL_ACCOUNTS
from shared.clock import utc_now
from shared.contracts.features import FeaturesComputed
from shared.errors import COMMON_RESPONSES, NotFound, Unprocessable
from shared.service_kit import RuntimeDep, info_router
from shared.web import (
    DATETIME_PATTERN,
    IDENTIFIER_PATTERN,
    RFC3339_TEXT,
    SYMBOL_PATTERN,
    Cursor,
    FromQuery,
    Limit,
    MarketDataReader,
    OpaqueCursor,
    Page,
    SymbolText,
    ToQuery,
    error_responses,
)


def get_queries(runtime: RuntimeDep) -> MarketDataQueries:
    return MarketDataQueries(runtime.sessionmaker)


Queries = Annotated[MarketDataQueries, Depends(get_queries)]
Symbol = Annotated[str, Query(min_length=3, max_length=32, pattern=SYMBOL_PATTERN, examples=["BTC/USD"])]
Venue = Annotated[str | None, Query(min_length=1, max_length=32, pattern=IDENTIFIER_PATTERN)]
MAX_SYMBOLS = 10

router = APIRouter(responses=COMMON_RESPONSES)
router.include_router(info_router("analytics"))
market = APIRouter(prefix="/analytics", tags=["market data"], responses=COMMON_RESPONSES)


@market.get("/candles", response_model=Page[CandleRead], responses=error_responses(404))
async def candles(
    _: MarketDataReader,
    queries: Queries,
    symbol: Symbol,
    start: FromQuery = None,
    end: ToQuery = None,
    interval: CandleInterval = CandleInterval.ONE_MINUTE,
    venue: Venue = None,
    limit: Limit = 100,
    cursor: OpaqueCursor = None,
) -> Page[CandleRead]:
    """Candles of a symbol whose bucket starts in [from, to), oldest first (refreshed by `aether data refresh-aggregates`)."""
    window = resolve_range(start, end, utc_now(), CANDLE_WINDOWS[interval])
    return await queries.candles(interval, symbol, venue, window, cursor, limit)


@market.get("/trades", response_model=Page[TradeRead], responses=error_responses(404))
async def trades(
    _: MarketDataReader,
    queries: Queries,
    symbol: Symbol,
    start: FromQuery = None,
    end: ToQuery = None,
    venue: Venue = None,
    limit: Limit = 100,
    cursor: OpaqueCursor = None,
) -> Page[TradeRead]:
    """Stored public trades of a symbol in [from, to), oldest first."""
    window = resolve_range(start, end, utc_now(), TRADE_WINDOWS)
    return await queries.trades(symbol, venue, window, cursor, limit)


@market.get("/book-snapshots", response_model=Page[BookSnapshotRead], responses=error_responses(404))
async def book_snapshots(
    _: MarketDataReader,
    queries: Queries,
    symbol: Symbol,
    start: FromQuery = None,
    end: ToQuery = None,
    venue: Venue = None,
    limit: Limit = 100,
    cursor: OpaqueCursor = None,
) -> Page[BookSnapshotRead]:
    """Stored book snapshots (top levels per side) of a symbol in [from, to), oldest first."""
    window = resolve_range(start, end, utc_now(), SNAPSHOT_WINDOWS)
    return await queries.snapshots(symbol, venue, window, cursor, limit)


@market.get("/market-data/health", response_model=MarketDataHealth)
async def health(
    _: MarketDataReader,
    queries: Queries,
    stale_after_s: Annotated[int, Query(ge=1, le=86_400, description="a feed without trades this long is stale")] = 60,
    window_minutes: Annotated[int, Query(ge=1, le=1_440, description="minutes counted for empty_minutes")] = 60,
) -> MarketDataHealth:
    """Per venue and symbol: last trade and snapshot, staleness, minutes of the window without trades."""
    return await queries.health(utc_now(), stale_after_s, window_minutes)


@market.get("/correlations", response_model=Correlations, responses=error_responses(404))
async def correlations(
    _: MarketDataReader,
    queries: Queries,
    symbols: Annotated[
        list[SymbolText],
        Query(
            min_length=2,
            max_length=MAX_SYMBOLS,
            description="2 to 10 symbols, repeated: symbols=BTC/USD&symbols=ETH/USD",
        ),
    ],
    start: FromQuery = None,
    end: ToQuery = None,
    interval: ReturnsInterval = ReturnsInterval.ONE_MINUTE,
    venue: Venue = None,
) -> Correlations:
    """Pearson correlations of the log returns of candle closes over a window."""
    if len(set(symbols)) != len(symbols):
        raise InvalidQuery("symbols", "a symbol appears more than once")
    window = resolve_range(start, end, utc_now(), CORRELATION_WINDOWS[interval])
    return await queries.correlations(interval, symbols, venue, window)


@market.get("/anomalies", response_model=Page[AnomalyRead])
async def anomalies(
    principal: MarketDataReader, queries: Queries, limit: Limit = 100, cursor: Cursor = 0
) -> Page[AnomalyRead]:
    """The anomaly log, newest first: market-data anomalies and those of the accounts the caller may see."""
    accounts = None if ALL_ACCOUNTS in principal.accounts else sorted(principal.accounts)
    return await queries.anomalies(accounts, cursor, limit)


# The stored microstructure features of one symbol and range (data/features, docs/features.md).
FEATURES_MAX_WINDOW = timedelta(days=31)


class FeaturesPage(BaseModel):
    """Features of one (venue, symbol), oldest bar first; `next_from` is the `from` of the next page."""

    model_config = ConfigDict(extra="forbid")

    items: list[FeaturesComputed]
    next_from: datetime | None


@market.get("/features", response_model=FeaturesPage, responses=error_responses(404, 422))
async def list_features(
    _: MarketDataReader,
    runtime: RuntimeDep,
    symbol: Symbol,
    venue: Annotated[str, Query(pattern=r"^[a-z][a-z0-9_-]{0,31}$")],
    start: Annotated[AwareDatetime, Query(alias="from", json_schema_extra={"pattern": DATETIME_PATTERN}), RFC3339_TEXT],
    end: Annotated[AwareDatetime, Query(alias="to", json_schema_extra={"pattern": DATETIME_PATTERN}), RFC3339_TEXT],
    limit: Limit = 500,
) -> FeaturesPage:
    """1-minute bars with `from <= bar_start < to` (at most 31 days; docs/features.md defines each value)."""
    if start >= end:
        raise Unprocessable("from must be before to", details={"field": "from"})
    if end - start > FEATURES_MAX_WINDOW:
        raise Unprocessable("the range is longer than 31 days", details={"field": "to"})
    async with runtime.sessionmaker() as session:
        rows = await feature_store.query(session, symbol, start, end, venue=venue, limit=limit)
        if not rows and not await feature_store.known(session, venue, symbol):
            raise NotFound(f"no features for {venue} {symbol}", details={"field": "symbol"})
    items = [
        FeaturesComputed(
            venue=row["venue"],
            symbol=row["instrument"],
            bar_start=row["bar_start"],
            bar_seconds=row["bar_seconds"],
            **{name: row[name] for name in FEATURES},
        )
        for row in rows
    ]
    more = len(items) == limit
    return FeaturesPage(items=items, next_from=items[-1].bar_start + timedelta(seconds=BAR_SECONDS) if more else None)


router.include_router(market)
