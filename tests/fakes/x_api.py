"""An X API v2 fake: `GET /2/tweets/counts/recent` and `GET /2/tweets/search/recent` over real HTTP on loopback.

It follows docs.x.com ("Get Posts Counts Recent", "Search recent Posts", "Rate limits"): app-only bearer auth
(401 otherwise); counts as `{"data": [{"start", "end", "tweet_count"}], "meta": {"total_tweet_count",
"next_token"?}}` by hour; posts as `{"data": [{"id", "text", "created_at"}], "meta": {"result_count",
"next_token"?}}`, newest first, `max_results` a page; `x-rate-limit-limit`, `-remaining` and `-reset` (UNIX
seconds) on every answer and 429 past the window's limit. Posts are seeded phrases on each cashtag.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PHRASES = (
    "{tag} is pumping, great breakout, love it",
    "{tag} looks terrible today, awful dump",
    "watching {tag} price action",
    "{tag} holders are happy and excited",
    "worried about {tag}, bad news and fear everywhere",
    "{tag} volume update",
)
COUNTS_PAGE_BUCKETS = 24


@dataclass(frozen=True, slots=True)
class FakePost:
    """One post of the fake."""

    post_id: str
    created_at: datetime
    text: str


class XApiFake:
    """State and answers of the fake; `app` is the ASGI application."""

    def __init__(
        self,
        *,
        bearer: str,
        seed: int = 7,
        start: datetime = datetime(2026, 11, 30, tzinfo=UTC),
        hours: int = 48,
        limit_per_window: int = 1_000,
        window_s: int = 900,
    ) -> None:
        self.bearer = bearer
        self.limit_per_window = limit_per_window
        self.window_s = window_s
        rng = random.Random(seed)
        self.posts: dict[str, list[FakePost]] = {}
        for tag in ("BTC", "ETH"):
            posts = []
            for hour in range(hours):
                for _ in range(rng.randrange(0, 6)):
                    at = start + timedelta(hours=hour, seconds=rng.randrange(3_600))
                    text = rng.choice(PHRASES).format(tag=f"${tag}")
                    posts.append(FakePost(str(10**15 + len(posts)), at, text))
            self.posts[tag] = sorted(posts, key=lambda p: p.created_at, reverse=True)
        self.requests: list[tuple[float, str, int, str | None]] = []  # (wall time, path, status, reset header)
        self._window_start = time.time()
        self._used = 0
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[Route("/2/tweets/counts/recent", self._counts), Route("/2/tweets/search/recent", self._search)]
        )

    def _rate_headers(self) -> tuple[bool, dict[str, str]]:
        now = time.time()
        if now - self._window_start >= self.window_s:
            self._window_start, self._used = now, 0
        allowed = self._used < self.limit_per_window
        self._used += allowed
        reset = math.ceil(self._window_start + self.window_s)
        return allowed, {
            "x-rate-limit-limit": str(self.limit_per_window),
            "x-rate-limit-remaining": str(self.limit_per_window - self._used),
            "x-rate-limit-reset": str(reset),
        }

    def _matching(self, request: Request) -> tuple[list[FakePost], datetime, datetime] | JSONResponse:
        query = request.query_params.get("query", "")
        tag = query.split()[0].removeprefix("$") if query.startswith("$") else ""
        try:
            start = datetime.fromisoformat(request.query_params["start_time"])
            end = datetime.fromisoformat(request.query_params["end_time"])
        except (KeyError, ValueError):
            return JSONResponse({"title": "Invalid Request", "status": 400, "detail": "start_time/end_time"}, 400)
        posts = [p for p in self.posts.get(tag, []) if start <= p.created_at < end]
        return posts, start, end

    def _answer(self, request: Request, build: object) -> JSONResponse:
        with self._lock:
            if request.headers.get("authorization") != f"Bearer {self.bearer}":
                response = JSONResponse({"title": "Unauthorized", "status": 401, "detail": "Unauthorized"}, 401)
            else:
                allowed, headers = self._rate_headers()
                if not allowed:
                    response = JSONResponse({"title": "Too Many Requests", "status": 429}, 429, headers)
                else:
                    matched = self._matching(request)
                    response = matched if isinstance(matched, JSONResponse) else build(request, *matched)  # type: ignore[operator]
                    response.headers.update(headers)
            reset = response.headers.get("x-rate-limit-reset")
            self.requests.append((time.time(), request.url.path, response.status_code, reset))
        return response

    async def _counts(self, request: Request) -> JSONResponse:
        return self._answer(request, self._build_counts)

    async def _search(self, request: Request) -> JSONResponse:
        return self._answer(request, self._build_search)

    def _build_counts(self, request: Request, posts: list[FakePost], start: datetime, end: datetime) -> JSONResponse:
        hours = []
        hour = start.replace(minute=0, second=0, microsecond=0)
        while hour < end:
            count = sum(1 for p in posts if hour <= p.created_at < hour + timedelta(hours=1))
            hours.append({"start": _z(hour), "end": _z(hour + timedelta(hours=1)), "tweet_count": count})
            hour += timedelta(hours=1)
        offset = int(request.query_params.get("next_token", "0") or 0)
        page = hours[offset : offset + COUNTS_PAGE_BUCKETS]
        meta: dict[str, object] = {"total_tweet_count": sum(h["tweet_count"] for h in page)}  # type: ignore[misc]
        if offset + COUNTS_PAGE_BUCKETS < len(hours):
            meta["next_token"] = str(offset + COUNTS_PAGE_BUCKETS)
        return JSONResponse({"data": page, "meta": meta})

    def _build_search(self, request: Request, posts: list[FakePost], start: datetime, end: datetime) -> JSONResponse:
        size = int(request.query_params.get("max_results", "10"))
        offset = int(request.query_params.get("next_token", "0") or 0)
        page = posts[offset : offset + size]
        meta: dict[str, object] = {"result_count": len(page)}
        if offset + size < len(posts):
            meta["next_token"] = str(offset + size)
        data = [{"id": p.post_id, "text": p.text, "created_at": _z(p.created_at)} for p in page]
        return JSONResponse({"data": data, "meta": meta} if data else {"meta": meta})


def _z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
