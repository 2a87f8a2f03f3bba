"""Composition root of the paper venue process: the venue on its books (schema `paper`), its feed, its stream."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from fastapi import FastAPI

from services.paper import api
from services.paper.adapters import PaperAdapters, paper_adapters
from services.paper.config import PaperSettings, get_settings
from services.paper.stream import UpdateHub
from shared.app_factory import ServiceRuntime, ServiceSpec, build_service_app
from shared.clock import utc_now
from shared.config import AetherSettings, service_settings
from shared.readiness import DependencyCheck
from shared.venues.paper import PaperVenue


def _restorer(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        adapters = paper_adapters(runtime)
        await adapters.venue.restore()  # retried by the supervisor while the database is down
        adapters.restored.set()

    return run


def _feed(settings: PaperSettings) -> Callable[[ServiceRuntime], Callable[[], Awaitable[None]]]:
    def build(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            from shared.venues.paper_feed import PaperFeed

            adapters = paper_adapters(runtime)
            await adapters.restored.wait()  # the market moves resting orders: they must be in the engines first
            feed = PaperFeed(
                adapters.venue,
                redis=runtime.redis,
                bootstrap=settings.kafka_bootstrap,
                security_protocol=settings.kafka_security_protocol,
                book_topic=settings.marketdata_book_topic,
                trade_topic=settings.marketdata_trade_topic,
            )
            await feed.run(runtime.stop_event)

        return run

    return build


def create_app(settings: AetherSettings | None = None, clock: Callable[[], datetime] = utc_now) -> FastAPI:
    """Build the paper venue app; settings default to the environment (tests give a clock of their own)."""
    paper_settings = service_settings(settings, PaperSettings, get_settings)

    async def on_startup(runtime: ServiceRuntime) -> None:
        venue = PaperVenue(
            runtime.sessionmaker,
            instruments=paper_settings.instrument_specs(),
            fee_schedules=paper_settings.fee_schedules(),
            clock=clock,
        )
        hub = UpdateHub(paper_settings.stream_backlog)
        venue.subscribe(hub.publish)
        adapters = PaperAdapters(venue, hub)
        runtime.adapters = adapters
        runtime.closers.append(hub.close)

        async def restored() -> None:
            if not adapters.restored.is_set():
                raise RuntimeError("the venue's books are not restored yet")

        runtime.checks.append(DependencyCheck("restored", restored))

    spec = ServiceSpec(
        name="paper",
        title="Aether Paper Venue",
        description="A simulated exchange on the live market data: orders, fills and balances of paper accounts.",
        routers=[api.router],
        workers=[("restore", _restorer), ("feed", _feed(paper_settings))],
        on_startup=on_startup,
    )
    app = build_service_app(spec, paper_settings)
    api.install_venue_errors(app)
    return app
