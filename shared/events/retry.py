"""Retries with exponential backoff and jitter (stamina), whose waits end as soon as the service is stopping.

`attempts_until_stopped(stop_event, stamina.retry_context(...))` yields stamina's attempts like the retry context
itself, but a stop request during a backoff wait raises `RetryStopped` at once instead of sleeping it out. The
attempt itself is never interrupted: only the wait between two attempts is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import stamina


class RetryStopped(Exception):
    """The stop event was set while waiting for the next attempt."""


async def attempts_until_stopped(
    stop_event: asyncio.Event,
    *,
    on: Callable[[BaseException], bool] | type[Exception] | tuple[type[Exception], ...],
    initial_s: float,
    max_s: float,
    attempts: int | None = None,
) -> AsyncIterator[stamina.Attempt]:
    """stamina attempts (unbounded when `attempts` is None, no overall timeout), jitter up to `initial_s`."""
    retries = stamina.retry_context(
        on=on, attempts=attempts, timeout=None, wait_initial=initial_s, wait_max=max_s, wait_jitter=initial_s
    ).__aiter__()
    while True:
        next_attempt = asyncio.ensure_future(retries.__anext__())
        stopping = asyncio.ensure_future(stop_event.wait())
        try:
            await asyncio.wait({next_attempt, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not next_attempt.done():
            next_attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # the wait was cut short: nothing to keep
                await next_attempt
            raise RetryStopped
        try:
            attempt = next_attempt.result()
        except StopAsyncIteration:
            return
        yield attempt
