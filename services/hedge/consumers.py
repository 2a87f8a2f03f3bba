"""Background work of the hedge service: market data and OMS order events from Kafka (each idempotent through
the `hedge.inbox` table) and the NAV poller that reads the account balances from the OMS over REST."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from services.hedge.service import HedgeService
from shared.app_factory import BackgroundWorker, ServiceRuntime, run_consumer
from shared.auth.roles import Role
from shared.auth.tokens import TokenIssuer
from shared.config import ConfigurationError, env_name
from shared.events import Envelope
from shared.marketdata import BookSnapshot, MarketDataError, Trade, decode_marketdata
from shared.observability.logging import get_logger

log = get_logger(__name__)

SERVICE_SUBJECT = "service:hedge"


def hedge_service(runtime: ServiceRuntime) -> HedgeService:
    service: HedgeService = runtime.extras["hedge"]
    return service


async def handle_marketdata(hedge: HedgeService, session: AsyncSession, envelope: Envelope) -> None:
    """Trades give their price, snapshots their mid; deltas are left to the OMS's book (documented)."""
    try:
        message = decode_marketdata(envelope)
    except MarketDataError as exc:
        log.warning("hedge_marketdata_skipped", error=str(exc)[:300])
        return
    if isinstance(message, Trade):
        await hedge.observe_price(session, message.symbol, message.price, message.timestamp)
    elif isinstance(message, BookSnapshot) and message.bids and message.asks:
        mid = (message.bids[0].price + message.asks[0].price) / 2
        await hedge.observe_price(session, message.symbol, mid, message.timestamp)


async def handle_order_event(hedge: HedgeService, session: AsyncSession, envelope: Envelope) -> None:
    """OMS order events settle the hedge's own orders; `CommandRejected` settles a refused command."""
    await hedge.on_order_event(session, envelope)


async def handle_decision(hedge: HedgeService, session: AsyncSession, envelope: Envelope) -> None:
    """`ApprovalDecided` from the approval service settles a pending hedge override."""
    await hedge.on_decision(session, envelope)
    hedge.on_commit()  # the evaluation may have queued a hedge command: nudge the relay


def _consumer(
    name: str,
    topics: Callable[[HedgeService], list[str]],
    handler: Callable[[HedgeService, AsyncSession, Envelope], Awaitable[None]],
) -> BackgroundWorker:
    def build(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            hedge = hedge_service(runtime)
            await run_consumer(
                runtime,
                name=f"hedge.{name}",
                topics=topics(hedge),
                handler=lambda session, envelope: handler(hedge, session, envelope),
            )

        return run

    return build


class OmsBalances:
    """Reads an account's balances from the OMS REST API with a short-lived service token."""

    def __init__(self, hedge: HedgeService, transport: httpx.AsyncBaseTransport | None = None) -> None:
        settings = hedge.settings
        if settings.jwt_private_key is None:
            raise ConfigurationError(f"{env_name('jwt_private_key')}: required to call the OMS ({env_name('oms_url')})")
        self._issuer = TokenIssuer(
            settings.jwt_private_key.get_secret_value(), settings.jwt_issuer, settings.jwt_audience
        )
        self._ttl_s = settings.service_token_ttl_s
        self._client = httpx.AsyncClient(base_url=str(settings.oms_url), transport=transport, timeout=5.0)

    async def fetch(self, account_id: str) -> dict[str, dict[str, Decimal]]:
        """{asset: {"total", "reserved"}}; raises httpx errors when the OMS does not answer 200."""
        token = self._issuer.issue(SERVICE_SUBJECT, [Role.SERVICE], accounts=[account_id], ttl_s=self._ttl_s)
        response = await self._client.get(
            "/balances", params={"account_id": account_id}, headers={"Authorization": f"Bearer {token}"}
        )
        response.raise_for_status()
        return {
            str(row["asset"]): {"total": Decimal(str(row["total"])), "reserved": Decimal(str(row["reserved"]))}
            for row in response.json()
        }

    async def close(self) -> None:
        await self._client.aclose()


async def poll_once(hedge: HedgeService, balances: OmsBalances) -> int:
    """Fetch and evaluate every tracked account once; returns how many were evaluated."""
    done = 0
    for account_id in await hedge.tracked_accounts():
        try:
            await hedge.record_holdings(account_id, await balances.fetch(account_id))
            done += 1
        except httpx.HTTPError as exc:
            log.error("hedge_balances_unavailable", account_id=account_id, error=str(exc)[:300])
    return done


def _nav_poller(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        hedge = hedge_service(runtime)
        if not hedge.settings.oms_url:
            log.warning("hedge_nav_polling_disabled", reason=f"{env_name('oms_url')} is not set")
            return
        balances = OmsBalances(hedge, runtime.extras.get("oms_transport"))
        try:
            while not runtime.stop_event.is_set():
                await poll_once(hedge, balances)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(runtime.stop_event.wait(), timeout=hedge.settings.nav_poll_interval_s)
        finally:
            await balances.close()

    return run


WORKERS: Sequence[tuple[str, BackgroundWorker]] = (
    (
        "marketdata",
        _consumer(
            "marketdata",
            lambda hedge: [hedge.settings.marketdata_book_topic, hedge.settings.marketdata_trade_topic],
            handle_marketdata,
        ),
    ),
    ("order-events", _consumer("order-events", lambda hedge: [hedge.settings.order_events_topic], handle_order_event)),
    ("decisions", _consumer("decisions", lambda hedge: [hedge.settings.decisions_topic], handle_decision)),
    ("nav-poller", _nav_poller),
)
