"""HTTP routes of the analytics service (thin: auth, parse, call the service, return)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

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
from shared.errors import COMMON_RESPONSES
from shared.service_kit import RuntimeDep, info_router
from shared.web import (
    IDENTIFIER_PATTERN,
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


router.include_router(market)
