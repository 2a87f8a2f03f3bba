"""A CoinGecko protocol fake: `GET /api/v3/coins/{id}/market_chart/range` over real HTTP on loopback.

It follows docs.coingecko.com ("Coin Historical Chart Data within Time Range by ID"; "Errors & Rate Limits"):
`vs_currency`, `from`, `to` in UNIX seconds; `{"prices", "market_caps", "total_volumes"}` lists of
`[ms, number]`; automatic granularity (5-minutely when the range is within the last day, hourly up to 90 days,
daily at 00:00 UTC above); 404 for an unknown coin; 429 with `Retry-After` past the free tier's rate. Values are
a deterministic function of the seed, coin, currency and time; `gaps` are stretches it has no data for, and
`fail_next` injects answers on demand.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.loopback import RecordedRequest

BASES = {"bitcoin": Decimal(60_000), "ethereum": Decimal(3_000), "tether": Decimal(1)}
SUPPLY = {"bitcoin": Decimal(19_500_000), "ethereum": Decimal(120_000_000), "tether": Decimal(110_000_000_000)}
CURRENCIES = {"usd": Decimal(1), "eur": Decimal("0.92")}
FIVE_MINUTES = timedelta(minutes=5)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MAX_RANGE = timedelta(days=365)


class CoinGeckoFake:
    """State and answers of the fake; `app` is the ASGI application."""

    def __init__(
        self,
        *,
        seed: int = 7,
        now: datetime | None = None,
        calls_per_window: int = 1_000_000,
        window_s: float = 60.0,
        gaps: list[tuple[datetime, datetime]] | None = None,
    ) -> None:
        self.seed = seed
        self.now = now or datetime(2026, 12, 1, tzinfo=UTC)
        self.calls_per_window = calls_per_window
        self.window_s = window_s
        self.gaps = gaps or []
        self.requests: list[RecordedRequest] = []
        self._faults: deque[tuple[int, dict[str, str]]] = deque()
        self._served: deque[float] = deque()
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/api/v3/coins/{coin}/market_chart/range", self._range)])

    def fail_next(self, status: int, count: int = 1, *, retry_after_s: int | None = None) -> None:
        """Answer the next `count` requests with `status` (and Retry-After when given)."""
        headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else {}
        with self._lock:
            self._faults.extend((status, headers) for _ in range(count))

    def step(self, start: datetime, end: datetime) -> timedelta:
        """The granularity CoinGecko picks for this range."""
        if end - start <= DAY and start >= self.now - DAY:
            return FIVE_MINUTES
        return HOUR if end - start <= timedelta(days=90) else DAY

    def point(self, coin: str, vs: str, at: datetime) -> tuple[Decimal, Decimal, Decimal]:
        """Price, market cap and volume at `at` (deterministic)."""
        rng = random.Random(f"{self.seed}:{coin}:{vs}:{int(at.timestamp())}")
        price = (BASES[coin] * CURRENCIES[vs] * Decimal(1 + (rng.random() - 0.5) / 50)).quantize(Decimal("1e-6"))
        cap = (price * SUPPLY[coin]).quantize(Decimal("0.01"))
        volume = Decimal(rng.randrange(10**6, 10**12)) / 100
        return price, cap, volume

    def answer(
        self, coin: str, vs: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, Decimal, Decimal, Decimal]]:
        """The points this fake returns for [start, end], in order."""
        step = self.step(start, end)
        first = math.ceil(start.timestamp() / step.total_seconds()) * step.total_seconds()
        at = datetime.fromtimestamp(first, UTC)
        points = []
        while at <= min(end, self.now):
            if not any(gap_start <= at < gap_end for gap_start, gap_end in self.gaps):
                points.append((at, *self.point(coin, vs, at)))
            at += step
        return points

    def _throttled(self) -> float | None:
        now = time.monotonic()
        while self._served and now - self._served[0] >= self.window_s:
            self._served.popleft()
        if len(self._served) >= self.calls_per_window:
            return self.window_s - (now - self._served[0])
        self._served.append(now)
        return None

    def _record(self, request: Request, status: int) -> None:
        self.requests.append(RecordedRequest(time.monotonic(), request.url.path, dict(request.query_params), status))

    async def _range(self, request: Request) -> Response:
        with self._lock:
            response = self._respond(request)
            self._record(request, response.status_code)
        return response

    def _respond(self, request: Request) -> Response:
        if self._faults:
            status, headers = self._faults.popleft()
            return JSONResponse({"status": {"error_code": status, "error_message": "injected"}}, status, headers)
        wait_s = self._throttled()
        if wait_s is not None:
            return JSONResponse(
                {"status": {"error_code": 429, "error_message": "You've exceeded the Rate Limit."}},
                429,
                {"Retry-After": str(max(1, math.ceil(wait_s)))},
            )
        coin = request.path_params["coin"]
        params = request.query_params
        if coin not in BASES:
            return JSONResponse({"error": "coin not found"}, 404)
        vs = params.get("vs_currency", "")
        try:
            start = datetime.fromtimestamp(int(params["from"]), UTC)
            end = datetime.fromtimestamp(int(params["to"]), UTC)
        except (KeyError, ValueError, OverflowError, OSError):
            return JSONResponse({"error": "invalid from or to"}, 400)
        if vs not in CURRENCIES:
            return JSONResponse({"error": "invalid vs_currency"}, 400)
        if end - start > MAX_RANGE:
            return JSONResponse({"error": {"status": {"error_code": 10012, "error_message": "range too large"}}}, 401)
        points = self.answer(coin, vs, start, end)
        body = {
            "prices": [[int(at.timestamp() * 1000), float(price)] for at, price, _, _ in points],
            "market_caps": [[int(at.timestamp() * 1000), float(cap)] for at, _, cap, _ in points],
            "total_volumes": [[int(at.timestamp() * 1000), float(volume)] for at, _, _, volume in points],
        }
        return Response(json.dumps(body), 200, media_type="application/json")
