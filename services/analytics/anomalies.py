"""The anomaly log: market-data anomalies found in the stored data, kept once and published once.

Every scan (the `anomaly-scan` worker, each `anomaly_scan_s`): feeds without a trade for `stale_after_s` (one
anomaly per episode: keyed by the last trade), holes longer than `max_gap_minutes` between 1-minute candles of
the window, 1-minute log returns beyond `jump_sigmas` standard deviations of the window's other returns, and
crossed books (the records the sink quarantined for one: a crossed feed snapshot, or the delta that crossed a book).
New ones are written to `analytics.anomalies` and queued on `analytics.anomaly-events.v1` in the same transaction
(outbox); a later scan that sees the same anomaly adds nothing. Trading anomalies (an account's slippage and fill
rate) come from the OMS's order events: services/analytics/trading.py.
"""

from __future__ import annotations

import math
import statistics
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import groupby, pairwise
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.analytics import repository
from shared.contracts.analytics import AnomalyDetected, AnomalyKind
from shared.contracts.marketdata import CROSSED_BOOK
from shared.contracts.registry import new_envelope
from shared.db.uow import UnitOfWork
from shared.events import EventTables, OutboxItem, add_many_to_outbox
from shared.events.envelope import Envelope, MessageDecodeError
from shared.events.topics import ANALYTICS_ANOMALY_EVENTS

PRODUCER = "analytics"
ORDER_VENUE = "oms"  # the venue of the anomalies found in the OMS's order events (they name none)
MIN_RETURNS = 10


@dataclass(frozen=True, slots=True)
class ScanPolicy:
    """What counts as an anomaly."""

    stale_after_s: int = 300
    window: timedelta = timedelta(hours=2)
    max_gap_minutes: int = 5
    jump_sigmas: float = 6.0


def anomaly(
    kind: AnomalyKind,
    venue: str,
    symbol: str,
    at: datetime,
    now: datetime,
    size: Decimal,
    detail: str,
    account_id: str | None = None,
) -> AnomalyDetected:
    """A new anomaly with a fresh id."""
    return AnomalyDetected(
        anomaly_id=uuid.uuid4().hex,
        kind=kind,
        venue=venue,
        symbol=symbol,
        account_id=account_id,
        observed_at=at,
        detected_at=now,
        magnitude=size,
        detail=detail,
    )


def _candle_anomalies(
    venue: str, symbol: str, candles: list[tuple[datetime, Decimal]], now: datetime, policy: ScanPolicy
) -> Iterator[AnomalyDetected]:
    for (at, _), (next_at, _) in pairwise(candles):
        missing = int((next_at - at).total_seconds() // 60) - 1
        if missing >= policy.max_gap_minutes:
            yield anomaly(
                AnomalyKind.TRADE_GAP, venue, symbol, at, now, Decimal(missing), f"{missing} minutes without a trade"
            )
    returns = [(b[0], math.log(b[1] / a[1])) for a, b in pairwise(candles)]
    if len(returns) < MIN_RETURNS:
        return
    for index, (at, value) in enumerate(returns):
        others = [r for i, (_, r) in enumerate(returns) if i != index]
        sigma = statistics.pstdev(others)
        if sigma > 0 and abs(value) > policy.jump_sigmas * sigma:
            sigmas = Decimal(str(round(abs(value) / sigma, 2)))
            yield anomaly(
                AnomalyKind.PRICE_JUMP, venue, symbol, at, now, sigmas, f"1m log return {value:+.6f} is {sigmas} sigma"
            )


def find_anomalies(
    health: Sequence[Any], closes: Sequence[Any], now: datetime, policy: ScanPolicy
) -> list[AnomalyDetected]:
    """The anomalies in the feeds' health rows and their 1-minute closes (pure: no I/O, no clock)."""
    found = []
    for row in health:
        if row.last_trade_at is not None and (now - row.last_trade_at).total_seconds() > policy.stale_after_s:
            silent = Decimal(int((now - row.last_trade_at).total_seconds()))
            found.append(
                anomaly(
                    AnomalyKind.STALE_FEED,
                    row.venue,
                    row.instrument,
                    row.last_trade_at,
                    now,
                    silent,
                    f"no trade for {silent} s",
                )
            )
    for (venue, symbol), rows in groupby(closes, key=lambda r: (r.venue, r.instrument)):
        found += _candle_anomalies(venue, symbol, [(r.bucket, r.close) for r in rows], now, policy)
    return found


def crossed_books(quarantined: Sequence[Any], now: datetime) -> list[AnomalyDetected]:
    """One crossed_book anomaly per quarantined crossed record (its feed and time from the envelope's payload)."""
    found = []
    for row in quarantined:
        try:
            payload = Envelope.from_bytes(row.raw).payload
        except MessageDecodeError:
            continue
        venue, symbol, at = payload.get("venue"), payload.get("symbol"), payload.get("timestamp")
        if not isinstance(venue, str) or not isinstance(symbol, str):
            continue
        try:
            observed = datetime.fromisoformat(at) if isinstance(at, str) else row.quarantined_at
            found.append(
                anomaly(AnomalyKind.CROSSED_BOOK, venue, symbol, observed, now, Decimal(0), "the feed's book crossed")
            )
        except ValueError:  # not a feed this log can name (a pydantic ValidationError is a ValueError)
            continue
    return found


async def record(
    session: AsyncSession, tables: EventTables, found: Sequence[AnomalyDetected], now: datetime
) -> list[AnomalyDetected]:
    """Write the anomalies not logged before and queue each on the outbox, in the caller's transaction."""
    rows = [a.model_dump(mode="python") for a in found]
    for row in rows:
        row["kind"] = str(row["kind"])
    new = await repository.record_anomalies(session, rows)
    fresh = [a for a in found if a.anomaly_id in new]
    items = [
        OutboxItem(ANALYTICS_ANOMALY_EVENTS, new_envelope(a, producer=PRODUCER, aggregate_id=a.symbol, now=now), None)
        for a in fresh
    ]
    await add_many_to_outbox(session, tables, items)
    return fresh


class AnomalyLog:
    """Scans the stored market data and records what it finds (see the module docstring)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], tables: EventTables, policy: ScanPolicy) -> None:
        self._sessionmaker = sessionmaker
        self._tables = tables
        self._policy = policy

    async def scan(self, now: datetime) -> list[AnomalyDetected]:
        """One scan at `now`; returns the anomalies recorded (and queued) for the first time."""
        async with UnitOfWork(self._sessionmaker) as uow:
            health = await repository.feed_health(uow.session, now, self._policy.window)
            closes = await repository.recent_closes(uow.session, now - self._policy.window)
            quarantined = await repository.crossed_book_quarantine(uow.session, now - self._policy.window, CROSSED_BOOK)
            found = find_anomalies(health, closes, now, self._policy) + crossed_books(quarantined, now)
            return await record(uow.session, self._tables, found, now)
