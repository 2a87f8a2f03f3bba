"""Binance's user data stream for one account: `executionReport` events to the adapter's listeners, REST
reconciliation (`BinanceVenue.sync`) as the backstop.

A listenKey from POST /api/v3/userDataStream (kept alive by PUT every `keepalive_s`, Binance closes it after 60
minutes without) names the stream `<url>/ws/<listenKey>`. After each (re)connection the account is reconciled over
REST, so fills made while the stream was down reach the listeners too; a fill is told once whichever path saw it
first. Malformed and unknown events are counted and skipped; a silent or closed connection reconnects after an
exponential backoff with full jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from shared.domain.types import AccountId
from shared.observability.logging import get_logger
from shared.venues.base import AmbiguousOutcome, TemporaryError, VenueRejected
from shared.venues.binance import wire
from shared.venues.binance.adapter import BinanceVenue
from shared.venues.binance.ws_public import STREAM_URL, FeedStats

log = get_logger(__name__)


class BinanceUserStream:
    """Runs one account's user data stream until stopped; never raises for what the venue sends."""

    def __init__(
        self,
        venue: BinanceVenue,
        account_id: AccountId,
        *,
        url: str = STREAM_URL,
        keepalive_s: float = 1800.0,
        idle_timeout_s: float = 300.0,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.venue = venue
        self.account_id = account_id
        self.url = url
        self.keepalive_s = keepalive_s
        self.idle_timeout_s = idle_timeout_s
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.rng = rng or random.Random()  # noqa: S311  # reconnect jitter, not a secret
        self.stats = FeedStats()
        self.reports = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, deliver, reconnect with backoff, until `stop` is set."""
        failures = 0
        while not stop.is_set():
            healthy = await self._connection(stop)
            failures = 0 if healthy else failures + 1
            if stop.is_set():
                break
            ceiling = min(self.max_backoff_s, self.initial_backoff_s * 2 ** max(0, failures - 1))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.rng.uniform(0, ceiling))

    async def _connection(self, stop: asyncio.Event) -> bool:
        try:
            key = await self.venue.listen_key(self.account_id)
            async with connect(f"{self.url}/ws/{key}", open_timeout=10) as ws:
                self.stats.connections += 1
                await self.venue.sync([self.account_id])  # what happened while no stream was open
                await self._session(ws, key, stop)
                return True
        except (TemporaryError, AmbiguousOutcome, VenueRejected) as exc:
            self.stats.count("rest_failed")
            log.warning("binance_user_stream_rest_failed", error=type(exc).__name__, detail=str(exc)[:200])
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
            self.stats.count("disconnect")
            log.warning("binance_user_stream_disconnected", error_type=type(exc).__name__)
        return False

    async def _session(self, ws: ClientConnection, key: str, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        renew_at = loop.time() + self.keepalive_s
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                if loop.time() >= renew_at:
                    await self.venue.listen_key(self.account_id, keepalive=key)
                    renew_at = loop.time() + self.keepalive_s
                receiver = asyncio.ensure_future(ws.recv())
                timeout = min(self.idle_timeout_s, max(0.0, renew_at - loop.time()))
                done, _ = await asyncio.wait({receiver, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if receiver not in done:
                    receiver.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                        await receiver
                    if stopper in done or loop.time() >= renew_at:
                        continue
                    self.stats.count("idle_timeout")
                    return
                await self._frame(receiver.result())
        finally:
            stopper.cancel()

    async def _frame(self, raw: str | bytes) -> None:
        try:
            event = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            self.stats.count("malformed")
            return
        kind = event.get("e") if isinstance(event, dict) else None
        if kind != "executionReport":
            if kind not in ("outboundAccountPosition", "balanceUpdate", "listenKeyExpired"):
                self.stats.count("unknown")
            return
        try:
            report = wire.execution_report(event)
        except wire.BinanceWireError as exc:
            self.stats.count("malformed")
            log.warning("binance_user_stream_malformed", error=str(exc)[:200])
            return
        self.reports += 1
        await self.venue.on_execution(self.account_id, report)
