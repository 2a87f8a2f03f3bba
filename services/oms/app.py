"""Composition root of the OMS: the paper venue, its market-data feed, the order service and its workers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from fastapi import FastAPI

from services.oms import api, consumers
from services.oms.config import OmsSettings, get_settings
from services.oms.service import OrderService
from shared.app_factory import ServiceRuntime, ServiceSpec, build_service_app
from shared.config import AetherSettings
from shared.db import create_engine, sessionmaker_for
from shared.domain.fees import KRAKEN_SPOT_FEE_SCHEDULE
from shared.domain.types import Symbol
from shared.readiness import DependencyCheck
from shared.venues.base import VenueAdapter


def utc_now() -> datetime:
    return datetime.now(UTC)


async def paper_venue(runtime: ServiceRuntime, settings: OmsSettings) -> VenueAdapter:
    """The paper venue keeps its own books in schema `paper`, through its own engine (it stands for the exchange)."""
    from shared.venues.paper import PaperVenue

    venue_engine = create_engine(settings, application_name="aether-paper-venue")
    runtime.closers.append(venue_engine.dispose)
    venue = PaperVenue(
        sessionmaker_for(venue_engine),
        instruments={Symbol(symbol): config.spec(symbol) for symbol, config in settings.instruments.items()},
        fee_schedule=KRAKEN_SPOT_FEE_SCHEDULE,
        clock=utc_now,
        quote_steps={Symbol(symbol): config.quote_step for symbol, config in settings.instruments.items()},
    )
    # The venue's books are restored by the reconciler (with retries), so a database outage at start-up
    # is a 503 on /readyz, not a crash.
    runtime.extras["restore_venue"] = venue.restore
    return venue


async def build_adapters(runtime: ServiceRuntime, settings: OmsSettings, venue: VenueAdapter | None) -> None:
    """Wire the venue (the paper venue unless one is given) to the order service."""
    if venue is None:
        venue = await paper_venue(runtime, settings)
    orders = OrderService(
        settings=settings,
        sessionmaker=runtime.sessionmaker,
        tables=runtime.tables,
        venue=venue,
        redis=runtime.redis,
        clock=utc_now,
        on_commit=runtime.relay.wake,
    )
    venue.subscribe(orders.apply_update)
    runtime.extras.update(orders=orders, venue=venue)
    runtime.checks.append(DependencyCheck("reconciliation", _reconciled(runtime)))


def _reconciled(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def probe() -> None:
        if consumers.RECONCILED not in runtime.extras:
            raise RuntimeError("startup reconciliation with the venue has not finished")

    return probe


def _feed(settings: OmsSettings) -> Callable[[ServiceRuntime], Callable[[], Awaitable[None]]]:
    def build(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
        return lambda: _run_feed(runtime, settings)

    return build


async def _run_feed(runtime: ServiceRuntime, settings: OmsSettings) -> None:
    """Market data from Kafka into the paper venue's books (and the latest book into Redis)."""
    from shared.venues.paper_feed import PaperFeed

    feed = PaperFeed(
        runtime.extras["venue"],
        redis=runtime.redis,
        bootstrap=settings.kafka_bootstrap,
        security_protocol=settings.kafka_security_protocol,
        book_topic=settings.marketdata_book_topic,
        trade_topic=settings.marketdata_trade_topic,
    )
    await feed.run(runtime.stop_event)


def create_app(settings: AetherSettings | None = None, venue: VenueAdapter | None = None) -> FastAPI:
    """Build the OMS app; settings default to the environment, the venue to the paper venue.

    Platform-wide settings are completed with the OMS's own defaults (instruments, thresholds).
    """
    if settings is None:
        oms_settings = get_settings()
    elif isinstance(settings, OmsSettings):
        oms_settings = settings
    else:
        oms_settings = OmsSettings(**settings.model_dump(exclude={"service_name"}))

    async def on_startup(runtime: ServiceRuntime) -> None:
        await build_adapters(runtime, oms_settings, venue)

    spec = ServiceSpec(
        name="oms",
        title="Aether Order Management",
        description="Orders, fills, positions and balances on the paper venue (and, later, real venues).",
        routers=[api.router],
        workers=[*consumers.WORKERS, *([("paper-feed", _feed(oms_settings))] if venue is None else [])],
        on_startup=on_startup,
    )
    return build_service_app(spec, oms_settings)
