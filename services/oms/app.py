"""Composition root of the OMS: the venues, the use cases and their workers.

The paper venue is the paper venue process when `AETHER_PAPER_VENUE_URL` is set (`aether up` sets it): the OMS calls
it over HTTP and follows its update stream. Unset, the paper venue and its market-data feed run inside this process.
Accounts routed to Kraken (`AETHER_ACCOUNT_VENUES`, or `AETHER_VENUE=kraken` for every account) trade through
`KrakenVenue`, to Coinbase through `CoinbaseVenue` (REST sync as its worker); with more than the paper venue in use, the use cases see a `VenueRouter` that picks each account's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import FastAPI

from services.oms import api, consumers
from services.oms.adapters import OmsAdapters, oms_adapters
from services.oms.config import OmsSettings, get_settings
from services.oms.controls import ControlsRepository
from services.oms.service import OrderService
from shared.app_factory import BackgroundWorker, ServiceRuntime, ServiceSpec, build_service_app
from shared.auth.service_tokens import ServiceTokenSource
from shared.clock import utc_now
from shared.config import AetherSettings, ConfigurationError, env_name, service_settings
from shared.contracts.controls import ControlOwner
from shared.crypto import key_provider_from_settings
from shared.db import UnitOfWork, create_engine, sessionmaker_for
from shared.domain.types import AccountId, Symbol
from shared.readiness import DependencyCheck
from shared.venues.base import VenueAdapter
from shared.venues.binance.adapter import BinanceVenue
from shared.venues.binance.credentials import check_credentials as check_binance_credentials
from shared.venues.binance.user_stream import BinanceUserStream
from shared.venues.coinbase.adapter import CoinbaseVenue
from shared.venues.coinbase.adapter import check_credentials as coinbase_check_credentials
from shared.venues.kraken.adapter import KrakenVenue
from shared.venues.kraken.credentials import StoredCredentials
from shared.venues.kraken.ws_private import KrakenExecutionStreams, StreamOptions
from shared.venues.latest_book import RedisLatestBook
from shared.venues.paper import PaperVenue
from shared.venues.paper_http import PaperHttpVenue, TokenProvider
from shared.venues.router import VenueRouter, venues_in_use

_V = TypeVar("_V")


def paper_venue(runtime: ServiceRuntime, settings: OmsSettings) -> PaperVenue:
    """The paper venue keeps its own books in schema `paper`, through its own engine (it stands for the exchange)."""
    venue_engine = create_engine(settings, application_name="aether-paper-venue")
    runtime.closers.append(venue_engine.dispose)
    return PaperVenue(
        sessionmaker_for(venue_engine),
        instruments=settings.instrument_specs(),
        fee_schedules=settings.fee_schedules(),
        clock=utc_now,
    )


def paper_venue_client(runtime: ServiceRuntime, settings: OmsSettings) -> PaperHttpVenue:
    """The paper venue process at `paper_venue_url`, called with the OMS's service identity (`venue:trade`) or, in
    development and tests, a fixed `paper_venue_token`; neither is a configuration error (fail closed)."""
    if settings.paper_venue_url is None:
        raise ConfigurationError(f"{env_name('paper_venue_url')} is not set")
    token: TokenProvider
    if settings.paper_venue_token is not None:
        fixed = settings.paper_venue_token.get_secret_value()

        async def fixed_token() -> str:
            return fixed

        token = fixed_token
    else:
        source = ServiceTokenSource.from_settings(settings)
        if source is None:
            raise ConfigurationError(
                f"{env_name('paper_venue_url')} needs a service identity ({env_name('service_client_id')}, "
                f"{env_name('service_client_secret')}) or {env_name('paper_venue_token')}"
            )
        runtime.closers.append(source.close)
        token = source.token
    venue = PaperHttpVenue(settings.paper_venue_url, token, timeout_s=settings.paper_venue_timeout_s)
    runtime.closers.append(venue.close)
    return venue


def kraken_venue(runtime: ServiceRuntime, settings: OmsSettings) -> KrakenVenue:
    """Kraken for the accounts routed to it: keys from the mounted folder or the accounts store, decrypted here."""
    credentials = StoredCredentials(
        runtime.sessionmaker, key_provider_from_settings(settings), settings.account_secrets_dir
    )
    venue = KrakenVenue(
        credentials,
        runtime.redis,
        base_url=settings.kraken_url,
        tier=settings.kraken_tier,
        timeout_s=settings.kraken_timeout_s,
        dead_man_timeout_s=settings.kraken_dead_man_timeout_s,
    )
    runtime.closers.append(venue.close)
    return venue


def binance_venue(runtime: ServiceRuntime, settings: OmsSettings) -> BinanceVenue:
    """Binance for the accounts routed to it: keys (HMAC or Ed25519) from the same stores, decrypted here."""
    credentials = StoredCredentials(
        runtime.sessionmaker,
        key_provider_from_settings(settings),
        settings.account_secrets_dir,
        check=check_binance_credentials,
    )
    symbols = [Symbol(s.strip()) for s in settings.binance_symbols.split(",") if s.strip()] or None
    venue = BinanceVenue(
        credentials,
        base_url=settings.binance_url,
        symbols=symbols,
        timeout_s=settings.binance_timeout_s,
        recv_window_ms=settings.binance_recv_window_ms,
    )
    runtime.closers.append(venue.close)
    return venue


def coinbase_venue(runtime: ServiceRuntime, settings: OmsSettings) -> CoinbaseVenue:
    """Coinbase Advanced Trade for the accounts routed to it: CDP keys decrypted here, checked as signing keys."""
    credentials = StoredCredentials(
        runtime.sessionmaker,
        key_provider_from_settings(settings),
        settings.account_secrets_dir,
        check=coinbase_check_credentials,
    )
    venue = CoinbaseVenue(credentials, base_url=settings.coinbase_url, timeout_s=settings.coinbase_timeout_s)
    runtime.closers.append(venue.close)
    return venue


def build_adapters(runtime: ServiceRuntime, settings: OmsSettings, venue: VenueAdapter | None) -> OmsAdapters:
    """Wire the venue (the paper venue process when configured, else the in-process paper venue, unless one is
    given; Kraken and a router by account when accounts trade there) to the use cases."""
    if venue is not None:
        return _wire(runtime, settings, venue, restore_venue=None)
    used = settings.venues_used()
    venues: dict[str, VenueAdapter] = {}
    restores: list[Callable[[], Awaitable[object]]] = []
    if "paper" in used:
        if settings.paper_venue_url is not None:
            venues["paper"] = paper_venue_client(runtime, settings)
        else:
            paper = paper_venue(runtime, settings)
            # The paper venue's books are restored by the reconciler (with retries), so a database outage at
            # start-up is a 503 on /readyz, not a crash.
            restores.append(paper.restore)
            venues["paper"] = paper
    if "kraken" in used:
        kraken = kraken_venue(runtime, settings)
        restores.append(kraken.start)  # AssetPairs: an unreachable Kraken keeps readiness red, retried
        venues["kraken"] = kraken
    if "binance" in used:
        binance = binance_venue(runtime, settings)
        restores.append(binance.start)  # server time and exchangeInfo: unreachable keeps readiness red, retried
        venues["binance"] = binance
    if "coinbase" in used:
        coinbase = coinbase_venue(runtime, settings)
        restores.append(coinbase.start)  # products: an unreachable Coinbase keeps readiness red, retried
        venues["coinbase"] = coinbase
    chosen: VenueAdapter = (
        VenueRouter(venues, settings.venue_routes(), settings.default_venue()) if settings.routed() else venues["paper"]
    )
    return _wire(runtime, settings, chosen, restore_venue=_restore_all(restores) if restores else None)


def _restore_all(steps: list[Callable[[], Awaitable[object]]]) -> Callable[[], Awaitable[int]]:
    async def restore() -> int:
        for step in steps:
            await step()
        return len(steps)

    return restore


def _venue(runtime: ServiceRuntime, kind: type[_V]) -> _V:
    """The venue of type `kind` this OMS trades on (alone or behind the router); a start-up bug if there is none."""
    for venue in venues_in_use(oms_adapters(runtime).venue).values():
        if isinstance(venue, kind):
            return venue
    raise RuntimeError(f"this OMS has no {kind.__name__}")


def _wire(
    runtime: ServiceRuntime,
    settings: OmsSettings,
    venue: VenueAdapter,
    restore_venue: Callable[[], Awaitable[int]] | None,
) -> OmsAdapters:
    latest_book = RedisLatestBook(runtime.redis)
    orders = OrderService(
        settings=settings,
        sessionmaker=runtime.sessionmaker,
        tables=runtime.tables,
        venue=venue,
        redis=runtime.redis,
        clock=utc_now,
        on_commit=runtime.relay.wake,
        latest_book=latest_book,
    )
    venue.subscribe(orders.apply_update)
    return OmsAdapters(orders=orders, venue=venue, latest_book=latest_book, restore_venue=restore_venue)


def _reconciled(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def probe() -> None:
        if not oms_adapters(runtime).reconciliation_status.done:
            raise RuntimeError("startup reconciliation with the venue has not finished")

    return probe


def _controls_known(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def probe() -> None:
        async with UnitOfWork(runtime.sessionmaker) as uow:
            seen = await ControlsRepository(uow.session).snapshots()
        missing = sorted(owner.value for owner in ControlOwner if owner not in seen)
        if missing:
            raise RuntimeError(f"no controls snapshot from {', '.join(missing)} yet: orders would be refused (503)")

    return probe


def _feed(settings: OmsSettings) -> Callable[[ServiceRuntime], Callable[[], Awaitable[None]]]:
    def build(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
        return lambda: _run_feed(runtime, settings)

    return build


def _follow_venue(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        await _venue(runtime, PaperHttpVenue).follow(runtime.stop_event)

    return run


async def _run_feed(runtime: ServiceRuntime, settings: OmsSettings) -> None:
    """Market data from Kafka into the paper venue's books (and the latest book into Redis)."""
    from shared.venues.paper_feed import PaperFeed

    feed = PaperFeed(
        _venue(runtime, PaperVenue),
        redis=runtime.redis,
        bootstrap=settings.kafka_bootstrap,
        security_protocol=settings.kafka_security_protocol,
        book_topic=settings.marketdata_book_topic,
        trade_topic=settings.marketdata_trade_topic,
    )
    await feed.run(runtime.stop_event)


def _maintain_kraken(settings: OmsSettings) -> BackgroundWorker:
    def build(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            adapters = oms_adapters(runtime)

            def healthy() -> bool:
                return adapters.reconciliation_status.done and not runtime.stop_event.is_set()

            kraken = _venue(runtime, KrakenVenue)
            streams = (
                None
                if not settings.kraken_ws_auth_url  # unset or empty: REST sync only
                else KrakenExecutionStreams(kraken, StreamOptions(url=settings.kraken_ws_auth_url))
            )
            # Waits for start-up reconciliation: the switch is armed only once the accounts are known to agree.
            maintain = kraken.maintain(
                healthy,
                runtime.stop_event,
                interval_s=settings.kraken_maintain_interval_s,
                stream_up=None if streams is None else streams.up,
                backstop_interval_s=settings.kraken_backstop_interval_s,
            )
            if streams is None:
                await maintain
            else:  # fills as they happen; the REST sync above is the backstop, more often while a stream is down
                kraken.executions = streams
                await asyncio.gather(maintain, streams.run(runtime.stop_event))

        return run

    return build


def _maintain_binance(settings: OmsSettings) -> BackgroundWorker:
    """REST reconciliation of every Binance account, and the user data stream of each account routed there."""

    def build(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            venue = _venue(runtime, BinanceVenue)
            routed = sorted(a for a, v in settings.venue_routes().items() if v == "binance")
            streams = [
                BinanceUserStream(venue, AccountId(a), url=settings.binance_stream_url).run(runtime.stop_event)
                for a in routed
            ]
            await asyncio.gather(
                venue.maintain(runtime.stop_event, interval_s=settings.binance_maintain_interval_s), *streams
            )

        return run

    return build


def _sync_coinbase(settings: OmsSettings) -> BackgroundWorker:
    def build(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            await _venue(runtime, CoinbaseVenue).maintain(
                runtime.stop_event, interval_s=settings.coinbase_sync_interval_s
            )

        return run

    return build


def _venue_workers(settings: OmsSettings, venue: VenueAdapter | None) -> list[tuple[str, BackgroundWorker]]:
    """The in-process paper venue's market-data feed or the paper venue process's update stream; Kraken's
    dead-man switch, REST sync and executions streams."""
    if venue is not None:
        return [("venue-updates", _follow_venue)] if isinstance(venue, PaperHttpVenue) else []
    used = settings.venues_used()
    workers: list[tuple[str, BackgroundWorker]] = []
    if "paper" in used:
        workers.append(
            ("venue-updates", _follow_venue)
            if settings.paper_venue_url is not None
            else ("paper-feed", _feed(settings))
        )
    if "kraken" in used:
        workers.append(("kraken-maintain", _maintain_kraken(settings)))
    if "binance" in used:
        workers.append(("binance-maintain", _maintain_binance(settings)))
    if "coinbase" in used:
        workers.append(("coinbase-sync", _sync_coinbase(settings)))
    if settings.routed():
        workers.append(("venue-retry", _retry_not_ready(settings)))
    return workers


def _retry_not_ready(settings: OmsSettings) -> BackgroundWorker:
    """After start-up reconciliation, reconcile again (and so admit) the accounts whose venue was not ready."""

    def build(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            adapters = oms_adapters(runtime)
            while not runtime.stop_event.is_set():
                if adapters.reconciliation_status.done and adapters.orders.ctx.not_ready:
                    async with consumers.reconciliation_turn(runtime.engine):
                        await adapters.reconciliation.reconcile_not_ready()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(runtime.stop_event.wait(), timeout=settings.venue_retry_s)

        return run

    return build


def create_app(settings: AetherSettings | None = None, venue: VenueAdapter | None = None) -> FastAPI:
    """Build the OMS app; settings default to the environment, the venue to the paper venue.

    Platform-wide settings are completed with the OMS's own defaults (instruments, thresholds).
    """
    oms_settings = service_settings(settings, OmsSettings, get_settings)

    async def on_startup(runtime: ServiceRuntime) -> None:
        runtime.adapters = build_adapters(runtime, oms_settings, venue)
        runtime.checks.append(DependencyCheck("reconciliation", _reconciled(runtime)))
        runtime.checks.append(DependencyCheck("controls", _controls_known(runtime)))

    spec = ServiceSpec(
        name="oms",
        title="Aether Order Management",
        description="Orders, fills, positions and balances on the paper venue (and, later, real venues).",
        routers=[api.router],
        workers=[*consumers.WORKERS, *_venue_workers(oms_settings, venue)],
        on_startup=on_startup,
    )
    return build_service_app(spec, oms_settings)
