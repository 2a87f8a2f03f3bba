"""CoinGecko backfill: `GET /coins/{id}/market_chart/range`, window by window, resumable.

Format (docs.coingecko.com, "Coin Historical Chart Data within Time Range by ID"): `vs_currency`, `from` and `to`
in UNIX seconds; the answer is `{"prices": [[ms, price], ...], "market_caps": [[ms, cap], ...],
"total_volumes": [[ms, volume], ...]}`. The granularity is automatic: 5-minutely for a 1-day range ending now,
hourly up to 90 days, daily (00:00 UTC) above, so the window length chooses the resolution. The keyless/demo
tier allows about 30 calls a minute and answers 429 past it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from data.ingest.backfill_store import PricePoint, insert_price_points, load_checkpoint, save_checkpoint
from data.ingest.http import (
    BackfillInputError,
    PayloadError,
    RateLimitedGetter,
    SourceRefused,
    TemporaryFailure,
    decode_json,
    retry_after_seconds,
)
from data.ingest.progress import BackfillReport, Gap, ProgressFn, ignore_progress, range_key

SOURCE = "coingecko"
DEFAULT_BASE_URL = "https://api.coingecko.com/api/v3"
FREE_TIER_CALLS_PER_MIN = 30
HOURLY_UP_TO = timedelta(days=90)
MAX_WINDOW = timedelta(days=365)  # the keyless/demo tier serves at most the past year in one request
DEFAULT_WINDOW = HOURLY_UP_TO
# NUMERIC(38,18) holds 20 integer digits.
MAX_VALUE = Decimal("1e20")
_COIN = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
_VS = re.compile(r"^[a-z]{2,10}$")
_SERIES = ("prices", "market_caps", "total_volumes")


@dataclass(frozen=True, slots=True)
class CoinGeckoRequest:
    """A validated backfill request."""

    coin: str
    vs: str
    start: datetime
    end: datetime
    window: timedelta

    @property
    def subject(self) -> str:
        return f"{self.coin}/{self.vs}"


def validate_request(coin: str, vs: str, start: datetime, end: datetime, window: timedelta) -> CoinGeckoRequest:
    """The request, or a BackfillInputError naming the bad field."""
    if not _COIN.fullmatch(coin):
        raise BackfillInputError("coin", f"{coin!r} is not a CoinGecko coin id (lower-case letters, digits, '-')")
    if not _VS.fullmatch(vs):
        raise BackfillInputError("vs", f"{vs!r} is not a currency code such as usd or eur")
    if start.tzinfo is None or end.tzinfo is None:
        raise BackfillInputError("from", "times need a time zone (e.g. 2026-01-01T00:00:00Z)")
    if start >= end:
        raise BackfillInputError("from", f"{start.isoformat()} is not before to ({end.isoformat()})")
    if window <= timedelta(0):
        raise BackfillInputError("window-days", "must be positive")
    if window > MAX_WINDOW:
        raise BackfillInputError(
            "window-days", f"{window.days} days is more than one request may span ({MAX_WINDOW.days} days)"
        )
    # CoinGecko takes whole seconds; so do the checkpoints.
    whole_start, whole_end = (moment.astimezone(UTC).replace(microsecond=0) for moment in (start, end))
    return CoinGeckoRequest(coin, vs, whole_start, whole_end, window)


def plan_windows(start: datetime, end: datetime, window: timedelta) -> list[tuple[datetime, datetime]]:
    """Consecutive windows covering [start, end]; a point on a boundary belongs to the later window."""
    windows = []
    cursor = start
    while cursor < end:
        windows.append((cursor, min(cursor + window, end)))
        cursor += window
    return windows


def _number(value: Any, position: str, *, allow_null: bool) -> Decimal | None:
    if value is None and allow_null:
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise PayloadError(SOURCE, position, "not a number")
    try:
        number = Decimal(value)
        if not number.is_finite() or number < 0 or number >= MAX_VALUE:
            raise PayloadError(SOURCE, position, f"out of range: {number}")
    except InvalidOperation:
        raise PayloadError(SOURCE, position, "not a number") from None
    return number


def _instant(value: Any, position: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise PayloadError(SOURCE, position, "timestamp is not a number of milliseconds")
    try:
        ms = int(value)
        if ms != value or not 0 <= ms < 32_503_680_000_000:  # before year 3000
            raise PayloadError(SOURCE, position, f"timestamp out of range: {value}")
    except (InvalidOperation, OverflowError, ValueError):
        raise PayloadError(SOURCE, position, "timestamp is not a number of milliseconds") from None
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def _series(payload: dict[str, Any], name: str) -> dict[datetime, Decimal | None]:
    rows = payload.get(name)
    if not isinstance(rows, list):
        raise PayloadError(SOURCE, name, "missing or not a list")
    values: dict[datetime, Decimal | None] = {}
    for index, row in enumerate(rows):
        position = f"{name}[{index}]"
        if not isinstance(row, list) or len(row) != 2:
            raise PayloadError(SOURCE, position, "not a [timestamp, value] pair")
        at = _instant(row[0], position)
        if at in values:
            raise PayloadError(SOURCE, position, f"duplicate timestamp {row[0]}")
        values[at] = _number(row[1], position, allow_null=name != "prices")
    return values


def parse_market_chart(payload: Any) -> list[PricePoint]:
    """The points of a market_chart/range answer, ordered by time; PayloadError on any other shape."""
    if not isinstance(payload, dict):
        raise PayloadError(SOURCE, "body", "not a JSON object")
    prices, caps, volumes = (_series(payload, name) for name in _SERIES)
    points = []
    for at in sorted(prices):
        price = prices[at]
        if price is None or price == 0:
            raise PayloadError(SOURCE, f"prices[{at.isoformat()}]", "price must be positive")
        points.append(PricePoint(at=at, price=price, market_cap=caps.get(at), volume=volumes.get(at)))
    return points


def expected_step(window_start: datetime, window_end: datetime) -> timedelta:
    """The coarsest step CoinGecko's automatic granularity gives a range of this length."""
    return timedelta(hours=1) if window_end - window_start <= HOURLY_UP_TO else timedelta(days=1)


def find_gaps(points: Sequence[PricePoint], window_start: datetime, window_end: datetime) -> list[Gap]:
    """Stretches longer than two steps without a point, the window's edges included."""
    step = expected_step(window_start, window_end)
    edges = [window_start, *(p.at for p in points), window_end]
    return [Gap(after=a, before=b) for a, b in itertools.pairwise(edges) if b - a > 2 * step]


def classify(response: httpx.Response) -> Any:
    """The JSON of a 200; TemporaryFailure for 429/408/5xx (with Retry-After); SourceRefused for other codes."""
    status = response.status_code
    if status == 200:
        return decode_json(SOURCE, response)
    if status in (408, 429) or status >= 500:
        raise TemporaryFailure(f"{SOURCE} answered {status}", retry_after_seconds(response.headers))
    raise SourceRefused(SOURCE, status, response.text[:200])


def _unix(moment: datetime) -> str:
    return str(int(moment.timestamp()))


async def backfill_coingecko(
    engine: AsyncEngine,
    getter: RateLimitedGetter,
    request: CoinGeckoRequest,
    progress: ProgressFn = ignore_progress,
) -> BackfillReport:
    """Fetch every window not yet checkpointed; each window's points and its checkpoint commit together."""
    key = range_key(request.start, request.end)
    report = BackfillReport(SOURCE, request.subject)
    async with engine.connect() as connection:
        checkpoint = await load_checkpoint(connection, SOURCE, request.subject, key)
    resume_at = request.start
    if checkpoint is not None:
        report.resumed = True
        resume_at = datetime.fromtimestamp(int(checkpoint.cursor), UTC)
        if checkpoint.completed:
            report.completed = True
            return report
    # Planned from the cursor, so a rerun with another --window-days neither skips nor repeats a stretch.
    windows = plan_windows(resume_at, request.end, request.window)
    for index, (window_start, window_end) in enumerate(windows):
        last = index == len(windows) - 1
        payload = await getter.get(
            f"/coins/{request.coin}/market_chart/range",
            {"vs_currency": request.vs, "from": _unix(window_start), "to": _unix(window_end)},
        )
        points = [p for p in parse_market_chart(payload) if window_start <= p.at and (p.at < window_end or last)]
        gaps = find_gaps(points, window_start, window_end)
        async with engine.begin() as connection:
            new_rows = await insert_price_points(connection, request.coin, request.vs, points)
            await save_checkpoint(
                connection,
                SOURCE,
                request.subject,
                key,
                cursor=_unix(window_end),
                new_rows=new_rows,
                new_gaps=len(gaps),
                completed=last,
            )
        report.pages += 1
        report.new_rows += new_rows
        report.gaps.extend(gaps)
        progress(window_end, request.start, request.end)
    report.completed = True
    return report
