"""Issue 14, items 5 and 6: the analytics service's market-data routes over the real store (candles, trades, book
snapshots by symbol and range with cursors, feed health, cross-asset correlations), their bad-input answers and
their auth, for BTC, ETH and a stablecoin against USD; and item 8, the anomaly log (stale feeds, once)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from data.ingest import store
from services.analytics.anomalies import AnomalyLog, ScanPolicy
from services.analytics.app import create_app
from services.analytics.config import AnalyticsSettings
from services.analytics.repository import anomalies as anomalies_table
from shared.auth.roles import Role
from shared.clock import utc_now
from shared.config import AetherSettings
from shared.db import create_engine, sessionmaker_for
from shared.domain.types import OrderSide
from shared.events import event_tables
from shared.events.topics import ANALYTICS_ANOMALY_EVENTS
from shared.marketdata import BookSnapshot, Level, Trade
from tests.kit.auth import bearer, jwt_settings
from tests.kit.oms import serving

MINUTES = 30
VIEWER = {"Authorization": f"Bearer {bearer(Role.VIEWER)}"}


@dataclass(frozen=True)
class Seeded:
    venue: str
    btc: str
    eth: str
    usd_stable: str
    start: datetime


def _symbols() -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:5].upper()
    return f"BTC{tag}/USD", f"ETH{tag}/USD", f"USDT{tag}/USD"


def _btc(minute: int) -> Decimal:
    return Decimal(100 + (minute * 7) % 11)


@pytest.fixture(scope="module")
async def seeded(settings: AetherSettings) -> Seeded:
    engine = create_engine(settings, application_name="aether-tests")
    venue, (btc, eth, stable) = f"v{uuid.uuid4().hex[:8]}", _symbols()
    start = utc_now().replace(second=0, microsecond=0) - timedelta(hours=2)
    trades = []
    for minute in range(MINUTES):
        at = start + timedelta(minutes=minute, seconds=10)
        # ETH's log return is exactly twice BTC's (price = BTC^2 / 100): correlation 1; the stablecoin never moves.
        for symbol, price in ((btc, _btc(minute)), (eth, _btc(minute) ** 2 / 100), (stable, Decimal(1))):
            trades.append(
                Trade(
                    venue=venue,
                    symbol=symbol,
                    trade_id=str(minute),
                    price=price,
                    qty=Decimal("0.5"),
                    side=OrderSide.SELL,
                    timestamp=at,
                )
            )
    book = BookSnapshot(
        venue=venue,
        symbol=btc,
        bids=[Level(price=Decimal("99.5"), qty=Decimal(2))],
        asks=[Level(price=Decimal("100.5"), qty=Decimal(3))],
        timestamp=start,
        sequence=1,
    )
    async with sessionmaker_for(engine).begin() as session:
        await store.insert_trades(session, trades)
        await store.insert_book_snapshots(session, [store.SnapshotRow.of(book, "snapshot", 10)])
    await store.refresh_aggregates(engine)
    await engine.dispose()
    return Seeded(venue, btc, eth, stable, start)


@pytest.fixture(scope="module")
async def client(settings: AetherSettings) -> AsyncIterator[httpx.AsyncClient]:
    base = settings.model_dump(exclude={"jwt_public_key", "jwt_private_key", "service_name", "log_level"})
    app = create_app(AnalyticsSettings(**base, **jwt_settings()))
    async with serving(app, "http://analytics") as http:
        yield http


async def _get(client: httpx.AsyncClient, path: str, **params: Any) -> httpx.Response:
    return await client.get(f"/analytics/{path}", params=params, headers=VIEWER)


def _range(seeded: Seeded) -> dict[str, str]:
    return {"from": seeded.start.isoformat(), "to": (seeded.start + timedelta(minutes=MINUTES)).isoformat()}


async def test_candles_page_through_the_range_with_the_cursor(client: httpx.AsyncClient, seeded: Seeded) -> None:
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"symbol": seeded.btc, "interval": "1m", "limit": 7, **_range(seeded)}
        response = await _get(client, "candles", **params, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        body = response.json()
        seen += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert (len(seen), pages) == (MINUTES, 5)
    assert [datetime.fromisoformat(c["bucket"]) for c in seen] == [
        seeded.start + timedelta(minutes=m) for m in range(MINUTES)
    ]
    assert [Decimal(c["close"]) for c in seen] == [_btc(m) for m in range(MINUTES)]
    assert {(c["trade_count"], Decimal(c["volume"])) for c in seen} == {(1, Decimal("0.5"))}


async def test_trades_and_book_snapshots_by_symbol_and_range(client: httpx.AsyncClient, seeded: Seeded) -> None:
    first = await _get(client, "trades", symbol=seeded.eth, limit=20, **_range(seeded))
    rest = await _get(
        client, "trades", symbol=seeded.eth, limit=20, cursor=first.json()["next_cursor"], **_range(seeded)
    )
    trades = first.json()["items"] + rest.json()["items"]
    assert [t["trade_id"] for t in trades] == [str(m) for m in range(MINUTES)]
    assert rest.json()["next_cursor"] is None
    assert Decimal(trades[3]["price"]) == _btc(3) ** 2 / 100
    books = await _get(client, "book-snapshots", symbol=seeded.btc, **_range(seeded))
    assert books.json()["items"] == [
        {
            "venue": seeded.venue,
            "symbol": seeded.btc,
            "taken_at": books.json()["items"][0]["taken_at"],
            "sequence": 1,
            "reason": "snapshot",
            "bids": [{"price": "99.5", "qty": "2"}],
            "asks": [{"price": "100.5", "qty": "3"}],
        }
    ]


async def test_correlations_across_btc_eth_and_a_stablecoin(client: httpx.AsyncClient, seeded: Seeded) -> None:
    response = await client.get(
        "/analytics/correlations",
        params=[
            ("symbols", seeded.btc),
            ("symbols", seeded.eth),
            ("symbols", seeded.usd_stable),
            *_range(seeded).items(),
        ],
        headers=VIEWER,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["points"] == MINUTES - 1
    assert body["matrix"][seeded.btc][seeded.eth] == pytest.approx(1.0, abs=1e-9)
    assert body["matrix"][seeded.btc][seeded.usd_stable] is None  # a constant series has no correlation


async def test_health_reports_the_feeds_staleness(client: httpx.AsyncClient, seeded: Seeded) -> None:
    response = await _get(client, "market-data/health", stale_after_s=600, window_minutes=180)
    assert response.status_code == 200, response.text
    mine = {f["symbol"]: f for f in response.json()["feeds"] if f["venue"] == seeded.venue}
    assert set(mine) == {seeded.btc, seeded.eth, seeded.usd_stable}
    btc = mine[seeded.btc]
    assert btc["stale"] is True
    assert btc["staleness_s"] > 90 * 60
    assert btc["empty_minutes"] == 180 - MINUTES
    assert btc["last_snapshot_at"] is not None


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("trades", {"from": "2026-03-02T12:00:00Z", "to": "2026-03-02T11:00:00Z"}, 422, "from"),
        ("trades", {"from": "2026-03-01T00:00:00Z", "to": "2026-03-03T00:00:00Z"}, 422, "from"),
        ("candles", {"interval": "1m", "from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, 422, "from"),
        ("trades", {"cursor": "bm90LWEtY3Vyc29y"}, 422, "cursor"),
        ("trades", {"limit": 501}, 422, "limit"),
        ("candles", {"interval": "5m"}, 422, "interval"),
    ],
)
async def test_bad_ranges_and_cursors_are_422_naming_the_field(
    client: httpx.AsyncClient, seeded: Seeded, path: str, params: dict[str, Any], status: int, field: str
) -> None:
    response = await _get(client, path, symbol=seeded.btc, **params)
    assert response.status_code == status, response.text
    assert response.json()["error"]["details"]["field"] == field


async def test_unknown_symbol_is_404_naming_the_field(client: httpx.AsyncClient, seeded: Seeded) -> None:
    response = await _get(client, "candles", symbol="NOPE/USD")
    assert response.status_code == 404
    assert response.json()["error"]["details"]["field"] == "symbol"
    both = await client.get(
        "/analytics/correlations", params=[("symbols", seeded.btc), ("symbols", "NOPE/USD")], headers=VIEWER
    )
    assert both.status_code == 404
    assert both.json()["error"]["details"]["field"] == "symbols"


async def test_routes_need_a_token_with_market_data_read(client: httpx.AsyncClient, seeded: Seeded) -> None:
    anonymous = await client.get("/analytics/trades", params={"symbol": seeded.btc})
    no_scope = await client.get(
        "/analytics/trades",
        params={"symbol": seeded.btc},
        headers={"Authorization": f"Bearer {bearer(Role.SERVICE, scopes=['orders:read'])}"},
    )
    service = await client.get(
        "/analytics/trades",
        params={"symbol": seeded.btc},
        headers={"Authorization": f"Bearer {bearer(Role.SERVICE, scopes=['market_data:read'])}"},
    )
    assert (anonymous.status_code, no_scope.status_code, service.status_code) == (401, 403, 200)


async def test_stale_feeds_are_logged_and_published_once(
    client: httpx.AsyncClient, seeded: Seeded, settings: AetherSettings
) -> None:
    engine = create_engine(settings, application_name="aether-tests")
    sessions = sessionmaker_for(engine)
    anomalies = AnomalyLog(sessions, event_tables("analytics"), ScanPolicy(stale_after_s=600))
    try:
        await anomalies.scan(utc_now())  # the service's own worker may have scanned first: either records them
        assert await anomalies.scan(utc_now()) == []  # seen already: nothing new, nothing published twice
        async with sessions() as session:
            logged = (
                await session.execute(sa.select(anomalies_table).where(anomalies_table.c.venue == seeded.venue))
            ).all()
            published = (
                await session.execute(
                    sa.select(sa.func.count())
                    .select_from(event_tables("analytics").outbox)
                    .where(event_tables("analytics").outbox.c.topic == ANALYTICS_ANOMALY_EVENTS)
                    .where(event_tables("analytics").outbox.c.payload["payload"]["venue"].astext == seeded.venue)
                )
            ).scalar()
    finally:
        await engine.dispose()
    assert sorted((a.kind, a.symbol) for a in logged) == sorted(
        ("stale_feed", symbol) for symbol in (seeded.btc, seeded.eth, seeded.usd_stable)
    )
    assert published == len(logged)
    page = (await client.get("/analytics/anomalies", params={"limit": 500}, headers=VIEWER)).json()
    assert {a.anomaly_id for a in logged} <= {item["anomaly_id"] for item in page["items"]}
