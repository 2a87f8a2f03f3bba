"""A Kraken public Trades fake: `GET /0/public/Trades?pair=&since=` over real HTTP on loopback.

It follows docs.kraken.com ("Get Recent Trades"): `{"error": [], "result": {"XXBTZUSD": [[price, volume, time,
side, ordertype, misc, trade_id], ...], "last": "<ns cursor>"}}`, prices and volumes as decimal strings, `time`
in seconds with a fraction, trades strictly after `since` (nanoseconds), at most `page_size` a page (Kraken: 1000),
errors in the `error` list (`EQuery:Unknown asset pair`, `EGeneral:Too many requests` past the rate). The
trades are a seeded random walk with distinct microsecond times, so `last` never splits a timestamp.
"""

from __future__ import annotations

import bisect
import json
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.loopback import RecordedRequest

PAIRS = {"XXBTZUSD": ("BTC/USD", Decimal(60_000)), "XETHZUSD": ("ETH/USD", Decimal(3_000))}
ALTNAMES = {"XBTUSD": "XXBTZUSD", "ETHUSD": "XETHZUSD"}
RATE_LIMITED = "EGeneral:Too many requests"


@dataclass(frozen=True, slots=True)
class FakeTrade:
    """One trade of the fake's tape."""

    trade_id: int
    time_us: int
    price: Decimal
    volume: Decimal
    side: str
    order_type: str

    @property
    def traded_at(self) -> datetime:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=self.time_us)

    def row(self) -> str:
        seconds = f"{self.time_us // 1_000_000}.{self.time_us % 1_000_000:06d}"
        return f'["{self.price}","{self.volume}",{seconds},"{self.side}","{self.order_type}","",{self.trade_id}]'


def tape(
    seed: int, base: Decimal, start: datetime, count: int, quiet: tuple[datetime, datetime] | None
) -> list[FakeTrade]:
    """`count` seeded trades from `start`, none inside the `quiet` stretch."""
    rng = random.Random(seed)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    time_us = (start - epoch) // timedelta(microseconds=1)
    price = base
    trades = []
    while len(trades) < count:
        time_us += rng.randrange(1, 3_000_000)
        at = epoch + timedelta(microseconds=time_us)
        if quiet is not None and quiet[0] <= at < quiet[1]:
            continue
        price = max(Decimal("0.1"), price + Decimal(rng.randrange(-50, 51)) / 10)
        volume = Decimal(rng.randrange(1, 10**8)) / 10**8
        trades.append(FakeTrade(1_000 + len(trades), time_us, price, volume, rng.choice("bs"), rng.choice("ml")))
    return trades


class KrakenTradesFake:
    """State and answers of the fake; `app` is the ASGI application."""

    def __init__(
        self,
        *,
        seed: int = 7,
        start: datetime = datetime(2026, 11, 1, tzinfo=UTC),
        count: int = 3_000,
        page_size: int = 1_000,
        calls_per_window: int = 1_000_000,
        window_s: float = 1.0,
        quiet: tuple[datetime, datetime] | None = None,
    ) -> None:
        self.page_size = page_size
        self.calls_per_window = calls_per_window
        self.window_s = window_s
        self.tapes = {
            pair: tape(seed + index, base, start, count, quiet) for index, (pair, (_, base)) in enumerate(PAIRS.items())
        }
        self._times = {pair: [t.time_us * 1_000 for t in trades] for pair, trades in self.tapes.items()}
        self.requests: list[RecordedRequest] = []
        self._faults: deque[str] = deque()
        self._served: deque[float] = deque()
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/0/public/Trades", self._trades)])

    def fail_next(self, kind: str, count: int = 1) -> None:
        """Inject `kind` into the next `count` answers: "rate_limit", "unavailable" (503) or "malformed_row"."""
        with self._lock:
            self._faults.extend([kind] * count)

    def trades_between(self, pair: str, start: datetime, end: datetime) -> list[FakeTrade]:
        """The full answer for [start, end): what a complete backfill must store."""
        return [t for t in self.tapes[pair] if start <= t.traded_at < end]

    def _throttled(self) -> bool:
        now = time.monotonic()
        while self._served and now - self._served[0] >= self.window_s:
            self._served.popleft()
        if len(self._served) >= self.calls_per_window:
            return True
        self._served.append(now)
        return False

    async def _trades(self, request: Request) -> Response:
        with self._lock:
            status, body = self._respond(request)
            self.requests.append(
                RecordedRequest(time.monotonic(), request.url.path, dict(request.query_params), status)
            )
        return Response(body, status, media_type="application/json")

    def _respond(self, request: Request) -> tuple[int, str]:
        fault = self._faults.popleft() if self._faults else None
        if fault == "unavailable":
            return 503, json.dumps({"error": ["EService:Unavailable"]})
        if fault == "rate_limit" or self._throttled():
            return 200, json.dumps({"error": [RATE_LIMITED]})
        pair = request.query_params.get("pair", "")
        pair = ALTNAMES.get(pair, pair)
        if pair not in self.tapes:
            return 200, json.dumps({"error": ["EQuery:Unknown asset pair"]})
        try:
            since = int(request.query_params.get("since", "0"))
        except ValueError:
            return 200, json.dumps({"error": ["EGeneral:Invalid arguments:since"]})
        times = self._times[pair]
        first = bisect.bisect_right(times, since)
        page = self.tapes[pair][first : first + self.page_size]
        last = str(page[-1].time_us * 1_000) if page else str(since)
        rows = [t.row() for t in page]
        if fault == "malformed_row" and rows:
            rows[len(rows) // 2] = '["not a price","1",1.5,"b","m","",1]'
        return 200, f'{{"error":[],"result":{{"{pair}":[{",".join(rows)}],"last":"{last}"}}}}'
