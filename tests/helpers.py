"""Test helpers: poll instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout_s: float = 15.0,
    interval_s: float = 0.05,
    message: str = "condition not met",
) -> T:
    """Await `probe()` until it returns a truthy value or raises nothing; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            result = await probe()
            if result:
                return result
            last_error = None
        except AssertionError as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} within {timeout_s}s") from last_error
        await asyncio.sleep(interval_s)
