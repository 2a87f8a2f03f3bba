"""Background workers of the analytics service: the anomaly scan, the streaming features, and the trading-anomaly
consumer of the OMS's order events (idempotent through the `analytics.inbox` table)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from data.features.worker import FeatureWorker
from services.analytics.anomalies import AnomalyLog, ScanPolicy, record
from services.analytics.config import AnalyticsSettings
from services.analytics.pnl_jumps import PnlJumpPolicy, PnlJumps
from services.analytics.trading import TradingAnomalies, TradingPolicy, prune_outcomes
from shared.app_factory import BackgroundWorker, ServiceRuntime, run_consumer
from shared.clock import utc_now
from shared.db.uow import UnitOfWork
from shared.events import Envelope
from shared.marketdata import BOOK_TOPIC, TRADE_TOPIC
from shared.observability.logging import get_logger

log = get_logger(__name__)


def anomaly_log_of(runtime: ServiceRuntime) -> AnomalyLog:
    """The anomaly log on the runtime's database, with the settings' policy."""
    settings = runtime.settings
    assert isinstance(settings, AnalyticsSettings)  # noqa: S101 - the analytics app is built with its own settings
    policy = ScanPolicy(
        stale_after_s=settings.anomaly_stale_after_s,
        window=timedelta(minutes=settings.anomaly_window_minutes),
        max_gap_minutes=settings.anomaly_max_gap_minutes,
        jump_sigmas=settings.anomaly_jump_sigmas,
    )
    return AnomalyLog(runtime.sessionmaker, runtime.tables, policy)


def anomaly_scan(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    """Scan every `anomaly_scan_s` until the runtime stops."""
    anomalies = anomaly_log_of(runtime)
    settings = runtime.settings
    assert isinstance(settings, AnalyticsSettings)  # noqa: S101 - as above
    trading_policy = trading_policy_of(settings)
    pnl = pnl_jumps_of(settings)

    async def work() -> None:
        while not runtime.stop_event.is_set():
            async with UnitOfWork(runtime.sessionmaker) as uow:
                await prune_outcomes(uow.session, utc_now(), trading_policy)
                now = utc_now()
                jumps = await record(uow.session, runtime.tables, await pnl.scan(uow.session, now), now)
            found = jumps + await anomalies.scan(utc_now())
            if found:
                log.warning("anomalies_detected", count=len(found), kinds=sorted({str(a.kind) for a in found}))
                runtime.relay.wake()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.stop_event.wait(), timeout=settings.anomaly_scan_s)

    return work


def trading_policy_of(settings: AnalyticsSettings) -> TradingPolicy:
    """The trading-anomaly thresholds of the settings."""
    return TradingPolicy(
        slippage_bps=settings.anomaly_slippage_bps,
        book_max_age=timedelta(seconds=settings.anomaly_slippage_book_age_s),
        fill_rate_window=timedelta(minutes=settings.anomaly_fill_rate_window_minutes),
        fill_rate_min_orders=settings.anomaly_fill_rate_min_orders,
        fill_rate_threshold=Decimal(settings.anomaly_fill_rate_threshold),
    )


def pnl_jumps_of(settings: AnalyticsSettings) -> PnlJumps:
    """The PnL-jump tracker with the settings' threshold and window."""
    policy = PnlJumpPolicy(
        quote=Decimal(settings.anomaly_pnl_jump_quote),
        window=timedelta(minutes=settings.anomaly_pnl_jump_window_minutes),
    )
    return PnlJumps(policy)


def order_events(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    """Trading anomalies from the OMS's order events; the relay is woken when one is found."""
    settings = runtime.settings
    assert isinstance(settings, AnalyticsSettings)  # noqa: S101 - as above
    trading = TradingAnomalies(runtime.tables, trading_policy_of(settings), pnl_jumps_of(settings))

    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        found = await trading.handle(session, envelope)
        if found:
            log.warning("trading_anomalies_detected", count=len(found), kinds=sorted({str(a.kind) for a in found}))
            runtime.relay.wake()

    async def run() -> None:
        await run_consumer(runtime, name="analytics.order-events", topics=[settings.order_events_topic], handler=handle)

    return run


def features(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    """The streaming feature engine over marketdata.* (data/features/worker.py)."""

    async def run() -> None:
        worker = FeatureWorker(runtime.tables)  # fresh state on every (re)start: see data/features/worker.py
        await run_consumer(runtime, name="analytics.features", topics=[BOOK_TOPIC, TRADE_TOPIC], handler=worker.handle)

    return run


# (name, worker factory) pairs started by the app's lifespan.
WORKERS: Sequence[tuple[str, BackgroundWorker]] = (
    ("anomaly-scan", anomaly_scan),
    ("features", features),
    ("order-events", order_events),
)
