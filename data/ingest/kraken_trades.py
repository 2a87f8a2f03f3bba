"""Kraken trades backfill: `GET /0/public/Trades?pair=&since=`, page by page from the `since` cursor, resumable.

Format (docs.kraken.com, "Get Recent Trades"): `{"error": [], "result": {"XXBTZUSD": [[price, volume, time, side,
ordertype, misc, trade_id], ...], "last": "<cursor>"}}`; prices and volumes are decimal strings, `time` UNIX
seconds with a fraction, `side` "b"/"s", `ordertype` "m"/"l"; at most 1000 trades a page. `last` is the `since`
of the next page. Errors come in the `error` list (`EQuery:Unknown asset pair`, `EGeneral:Too many requests`);
public endpoints allow about one call a second per IP. OHLC alone stops at 720 candles, hence trades.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from data.ingest.backfill_store import TradeRow, insert_trades, load_checkpoint, save_checkpoint
from data.ingest.http import (
    BackfillInputError,
    PayloadError,
    RateLimitedGetter,
    SourceRefused,
    TemporaryFailure,
    decode_json,
    retry_after_seconds,
    whole_number,
)
from data.ingest.progress import BackfillReport, ProgressFn, ignore_progress, range_key
from shared.clock import utc_now
from shared.venues.instruments import KRAKEN

SOURCE = "kraken"
VENUE = "kraken"
DEFAULT_BASE_URL = "https://api.kraken.com"
PUBLIC_CALLS_PER_S = 1.0
# Kraken's pair names (AssetPairs): the platform's symbols use BTC where Kraken says XBT.
PAIR_NAMES: Mapping[str, str] = MappingProxyType({"BTC/USD": "XXBTZUSD", "ETH/USD": "XETHZUSD"})
RATE_LIMIT_ERRORS = frozenset({"EGeneral:Too many requests", "EAPI:Rate limit exceeded"})
TEMPORARY_ERRORS = frozenset({"EService:Unavailable", "EService:Busy", "EGeneral:Temporary lockout"})
_SIDES: Mapping[str, str] = MappingProxyType({"b": "buy", "s": "sell"})
_MAX_DECIMAL = Decimal("1e20")
_MAX_TIME_S = Decimal(32_503_680_000)  # year 3000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class KrakenRequest:
    """A validated backfill request; `end` None means up to the time of each run."""

    symbol: str
    pair: str
    start: datetime
    end: datetime | None


@dataclass(frozen=True, slots=True)
class TradesPage:
    """One page of trades and the cursor of the next."""

    trades: list[TradeRow]
    last: str


def validate_request(symbol: str, start: datetime, end: datetime | None) -> KrakenRequest:
    """The request, or a BackfillInputError naming the bad field."""
    pair = PAIR_NAMES.get(symbol)
    if pair is None or symbol not in KRAKEN.pairs:
        raise BackfillInputError("symbol", f"unknown symbol {symbol!r}; known: {', '.join(sorted(PAIR_NAMES))}")
    if start.tzinfo is None or (end is not None and end.tzinfo is None):
        raise BackfillInputError("from", "times need a time zone (e.g. 2026-01-01T00:00:00Z)")
    if end is not None and start >= end:
        raise BackfillInputError("from", f"{start.isoformat()} is not before to ({end.isoformat()})")
    return KrakenRequest(symbol, pair, start.astimezone(UTC), end.astimezone(UTC) if end is not None else None)


def _decimal_text(value: Any, position: str, *, what: str) -> Decimal:
    if not isinstance(value, str):
        raise PayloadError(SOURCE, position, f"{what} is not a decimal string")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise PayloadError(SOURCE, position, f"{what} is not a decimal string") from None
    if not number.is_finite() or not 0 < number < _MAX_DECIMAL:
        raise PayloadError(SOURCE, position, f"{what} out of range: {value!r}")
    return number


def _time(value: Any, position: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise PayloadError(SOURCE, position, "time is not a number of seconds")
    seconds = Decimal(value)
    if not seconds.is_finite() or not 0 < seconds < _MAX_TIME_S:
        raise PayloadError(SOURCE, position, f"time out of range: {value}")
    micros = int((seconds * 1_000_000).to_integral_value(ROUND_FLOOR))
    return _EPOCH + timedelta(microseconds=micros)


def _trade(row: Any, position: str, symbol: str) -> TradeRow:
    if not isinstance(row, list) or len(row) != 7:
        raise PayloadError(SOURCE, position, "not a [price, volume, time, side, ordertype, misc, trade_id] row")
    price_text, volume_text, time_value, side, order_type, misc, trade_id = row
    if side not in _SIDES:
        raise PayloadError(SOURCE, position, f"side {side!r} is not 'b' or 's'")
    if order_type not in ("m", "l") or not isinstance(misc, str):
        raise PayloadError(SOURCE, position, "ordertype is not 'm' or 'l', or misc is not a string")
    number = whole_number(trade_id)
    if number is None or number < 0:
        raise PayloadError(SOURCE, position, "trade_id is not a non-negative integer")
    return TradeRow(
        venue=VENUE,
        instrument=symbol,
        trade_id=str(number),
        traded_at=_time(time_value, position),
        price=_decimal_text(price_text, position, what="price"),
        quantity=_decimal_text(volume_text, position, what="volume"),
        side=_SIDES[side],
    )


def parse_trades(payload: Any, pair: str, symbol: str) -> TradesPage:
    """The trades of a Trades answer for `pair`; PayloadError on any other shape."""
    if not isinstance(payload, dict):
        raise PayloadError(SOURCE, "body", "not a JSON object")
    if payload.get("error") != []:
        raise PayloadError(SOURCE, "error", f"not an empty list: {str(payload.get('error'))[:200]}")
    result = payload.get("result")
    if not isinstance(result, dict):
        raise PayloadError(SOURCE, "result", "missing or not an object")
    rows = result.get(pair)
    if not isinstance(rows, list):
        raise PayloadError(SOURCE, f"result.{pair}", "missing or not a list")
    last = result.get("last")
    last_number = whole_number(last)
    if last_number is not None and last_number >= 0:
        last = str(last_number)
    if not isinstance(last, str) or not last.isdigit() or len(last) > 30:
        raise PayloadError(SOURCE, "result.last", "not a cursor of digits")
    trades = [_trade(row, f"result.{pair}[{index}]", symbol) for index, row in enumerate(rows)]
    return TradesPage(trades=trades, last=last)


def classify(response: httpx.Response) -> Any:
    """The JSON of a successful answer; TemporaryFailure for rate limits and outages; SourceRefused otherwise."""
    if response.status_code == 429 or response.status_code >= 500:
        raise TemporaryFailure(f"{SOURCE} answered {response.status_code}", retry_after_seconds(response.headers))
    payload = decode_json(SOURCE, response)
    errors = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(errors, list) and errors:
        texts = [str(error)[:200] for error in errors]
        if any(text in RATE_LIMIT_ERRORS or text in TEMPORARY_ERRORS for text in texts):
            raise TemporaryFailure(f"{SOURCE}: {', '.join(texts)}", retry_after_seconds(response.headers))
        raise SourceRefused(SOURCE, response.status_code, ", ".join(texts))
    if response.status_code != 200:
        raise SourceRefused(SOURCE, response.status_code, response.text[:200])
    return payload


def _nanoseconds(moment: datetime) -> str:
    delta = moment - _EPOCH
    return str((delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000)


async def backfill_kraken(
    engine: AsyncEngine,
    getter: RateLimitedGetter,
    request: KrakenRequest,
    progress: ProgressFn = ignore_progress,
) -> BackfillReport:
    """Page through trades from the checkpoint's cursor; each page's trades and the next cursor commit together."""
    key = range_key(request.start, request.end)
    end = request.end or utc_now()
    report = BackfillReport(SOURCE, request.symbol)
    async with engine.connect() as connection:
        checkpoint = await load_checkpoint(connection, SOURCE, request.symbol, key)
    since = str(int(_nanoseconds(request.start)) - 1)  # `since` is exclusive, and a trade at `start` is in range
    if checkpoint is not None:
        report.resumed = True
        since = checkpoint.cursor
        if checkpoint.completed and request.end is not None:
            report.completed = True
            return report
    while True:
        payload = await getter.get("/0/public/Trades", {"pair": request.pair, "since": since})
        page = parse_trades(payload, request.pair, request.symbol)
        trades = [t for t in page.trades if request.start <= t.traded_at < end]
        reached = max((t.traded_at for t in page.trades), default=end)
        completed = not page.trades or reached >= end or page.last == since
        async with engine.begin() as connection:
            new_rows = await insert_trades(connection, trades)
            await save_checkpoint(
                connection,
                SOURCE,
                request.symbol,
                key,
                cursor=page.last,
                new_rows=new_rows,
                new_gaps=0,
                completed=completed,
            )
        report.pages += 1
        report.new_rows += new_rows
        progress(min(reached, end), request.start, end)
        if completed:
            report.completed = True
            return report
        since = page.last
