"""What every backfill source shares: input and payload errors, a token bucket, and retried GETs.

A GET is retried (stamina, exponential backoff with jitter) on transport errors, 5xx and rate limiting; a 429 or
a venue's rate-limit error waits the server's `Retry-After` when it sends one. Anything else is definitive.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import stamina

RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0
MAX_RETRY_AFTER_S = 300.0


class BackfillInputError(ValueError):
    """A request the backfill refuses before calling anyone; names the offending field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field_name = field_name


class PayloadError(ValueError):
    """A response that does not have the documented shape; names the source and the position."""

    def __init__(self, source: str, position: str, message: str) -> None:
        super().__init__(f"{source} response at {position}: {message}")
        self.source = source
        self.position = position


class SourceRefused(Exception):
    """A definitive refusal by the source (unknown coin or pair, bad parameters): never retried."""

    def __init__(self, source: str, status_code: int, message: str) -> None:
        super().__init__(f"{source} refused the request (HTTP {status_code}): {message}")
        self.status_code = status_code


class TemporaryFailure(Exception):
    """A failure worth retrying: a transport error, a 5xx, or rate limiting."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """The `Retry-After` header in seconds (delta-seconds form), None when absent or unreadable."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S) if math.isfinite(seconds) else None


def backoff_hook(exc: BaseException) -> bool | float:
    """stamina's hook: wait the server's Retry-After when it gave one, the exponential backoff otherwise."""
    if isinstance(exc, TemporaryFailure):
        return exc.retry_after_s if exc.retry_after_s is not None else True
    return False


def decode_json(source: str, response: httpx.Response) -> Any:
    """The body as JSON with every number as Decimal (never float), or a PayloadError."""
    try:
        return json.loads(response.content, parse_float=Decimal, parse_int=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(source, "body", f"not JSON ({exc.__class__.__name__})") from None


def whole_number(value: Any) -> int | None:
    """`value` as an int when it is a JSON whole number (int or integral Decimal), else None."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        return None
    if isinstance(value, Decimal) and (not value.is_finite() or value != value.to_integral_value()):
        return None
    return int(value)


@dataclass
class TokenBucket:
    """Async token bucket: `rate_per_s` tokens a second, at most `capacity` saved up."""

    rate_per_s: float
    capacity: float = 1.0
    clock: Callable[[], float] = time.monotonic
    _tokens: float = field(init=False)
    _updated: float = field(init=False)
    _lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.capacity < 1:
            raise ValueError("rate_per_s must be positive and capacity at least 1")
        self._tokens = self.capacity
        self._updated = self.clock()

    async def acquire(self) -> None:
        """Take one token, waiting until one is available."""
        async with self._lock:
            while True:
                now = self.clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate_per_s)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate_per_s)


@dataclass
class RateLimitedGetter:
    """GETs through one token bucket, retried on temporary failures; `classify` turns a response into JSON or raises."""

    client: httpx.AsyncClient
    bucket: TokenBucket
    classify: Callable[[httpx.Response], Any]
    attempts: int = 8

    async def get(self, path: str, params: Mapping[str, str]) -> Any:
        """The classified JSON of `path` with `params`."""
        retries = stamina.retry_context(
            on=backoff_hook,
            attempts=self.attempts,
            timeout=None,
            wait_initial=RETRY_INITIAL_S,
            wait_max=RETRY_MAX_S,
            wait_jitter=RETRY_INITIAL_S,
        )
        async for attempt in retries:
            with attempt:
                await self.bucket.acquire()
                try:
                    response = await self.client.get(path, params=dict(params))
                except httpx.TransportError as exc:
                    raise TemporaryFailure(f"{exc.__class__.__name__}: {exc}") from exc
                return self.classify(response)
        raise AssertionError("stamina ends with a return or an exception")  # pragma: no cover
