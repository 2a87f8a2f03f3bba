"""Issue 15, item 1: the backtester reads a range of the market data store (rows written by the store's own writer),
in keyset-paged chunks, and reports an empty or gapped range instead of bridging it."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import typer
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from aether.backtest_cli import app
from data.ingest import store
from data.replay import store_reader
from data.replay.store_reader import StoreRange, StoreRangeError, load_bars, load_market_data
from ml.cli import _fold_backtest
from shared.backtest.bars import Bar
from shared.config import AetherSettings
from shared.db import create_engine
from shared.domain.types import OrderSide
from shared.marketdata import BookSnapshot, Level, Trade

SYMBOL = "BTC/USD"


def _trade(venue: str, at: datetime, price: str) -> Trade:
    return Trade(
        venue=venue,
        symbol=SYMBOL,
        trade_id=f"t{at.timestamp():.0f}",
        price=Decimal(price),
        qty=Decimal("0.5"),
        side=OrderSide.SELL,
        timestamp=at,
    )


def _book(venue: str, at: datetime, sequence: int) -> BookSnapshot:
    return BookSnapshot(
        venue=venue,
        symbol=SYMBOL,
        bids=[Level(price=Decimal("999.9"), qty=Decimal(2)), Level(price=Decimal("999.0"), qty=Decimal(3))],
        asks=[Level(price=Decimal("1000.1"), qty=Decimal(2))],
        timestamp=at,
        sequence=sequence,
    )


async def _write(
    engine: AsyncEngine, venue: str, start: datetime, minutes: int, hole: tuple[int, int] | None = None
) -> tuple[list[Trade], list[BookSnapshot]]:
    trades = [
        _trade(venue, start + timedelta(seconds=s), str(1000 + (s // 60) % 7))
        for s in range(0, minutes * 60, 30)
        if hole is None or not hole[0] * 60 <= s < hole[1] * 60
    ]
    books = [_book(venue, t.timestamp, i) for i, t in enumerate(trades) if i % 4 == 0]
    async with engine.begin() as connection:
        assert await store.insert_trades(connection, trades) == len(trades)
        rows = [store.SnapshotRow.of(b, "interval", 10) for b in books]
        assert await store.insert_book_snapshots(connection, rows) == len(books)
    return trades, books


async def test_a_stored_range_comes_back_in_time_order_through_small_chunks(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    venue, start = f"v{uuid.uuid4().hex[:8]}", datetime(2030, 3, 1, tzinfo=UTC)
    trades, books = await _write(engine, venue, start, 20)
    monkeypatch.setattr(store_reader, "CHUNK", 7)  # 40 trades, 10 snapshots: several pages each
    async with engine.connect() as connection:
        [stream] = await load_market_data(
            connection, StoreRange(venue, (SYMBOL,), start, start + timedelta(minutes=20))
        )
    assert [type(m).__name__ for m in stream[:3]] == ["BookSnapshot", "Trade", "Trade"]  # a snapshot before its trade
    assert [m for m in stream if isinstance(m, Trade)] == trades
    assert [m for m in stream if isinstance(m, BookSnapshot)] == books
    assert [m.timestamp for m in stream] == sorted(m.timestamp for m in stream)


async def test_an_empty_or_gapped_range_is_an_error_naming_symbol_and_gap(engine: AsyncEngine) -> None:
    venue, start = f"v{uuid.uuid4().hex[:8]}", datetime(2030, 3, 2, tzinfo=UTC)
    await _write(engine, venue, start, 60, hole=(20, 35))
    async with engine.connect() as connection:
        with pytest.raises(
            StoreRangeError, match=r"BTC/USD: gap from 2030-03-02T00:19:30\+00:00 to 2030-03-02T00:35:00\+00:00"
        ):
            await load_market_data(connection, StoreRange(venue, (SYMBOL,), start, start + timedelta(minutes=60)))
        # The range's edges count: data ending 40 minutes before --end is a gap too, not a quiet market.
        with pytest.raises(
            StoreRangeError, match=r"BTC/USD: gap from 2030-03-02T00:59:30\+00:00 to 2030-03-02T01:40:00"
        ):
            await load_market_data(
                connection, StoreRange(venue, (SYMBOL,), start + timedelta(minutes=40), start + timedelta(minutes=100))
            )
        with pytest.raises(StoreRangeError, match=f"ETH/USD: no data stored for venue {venue}"):
            await load_market_data(connection, StoreRange(venue, ("ETH/USD",), start, start + timedelta(minutes=60)))
        # Allowed when the caller declares a longer tolerable gap.
        wide = StoreRange(venue, (SYMBOL,), start, start + timedelta(minutes=60), max_gap=timedelta(minutes=16))
        [stream] = await load_market_data(connection, wide)
        assert len([m for m in stream if isinstance(m, Trade)]) == 90


async def test_stored_candles_replay_as_bars(engine: AsyncEngine) -> None:
    venue, start = f"v{uuid.uuid4().hex[:8]}", datetime(2030, 3, 3, tzinfo=UTC)
    await _write(engine, venue, start, 10)
    await store.refresh_aggregates(engine, ["1m"])
    async with engine.connect() as connection:
        [bars] = await load_bars(connection, StoreRange(venue, (SYMBOL,), start, start + timedelta(minutes=10)), "1m")
        with pytest.raises(StoreRangeError, match="no stored interval '5m'"):
            await load_bars(connection, StoreRange(venue, (SYMBOL,), start, start + timedelta(minutes=10)), "5m")
    assert len(bars) == 10
    # Minute m traded twice at 1000 + m % 7, 0.5 each.
    assert bars[3] == Bar(
        SYMBOL, start + timedelta(minutes=3), start + timedelta(minutes=4), *(Decimal(1003),) * 4, Decimal(1)
    )


def test_cli_runs_from_the_store_and_names_a_gap(
    settings: AetherSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = datetime(2031, 1, 1, tzinfo=UTC) + timedelta(days=uuid.uuid4().int % 3000)

    async def write() -> int:
        engine = create_engine(settings)
        try:
            trades, books = await _write(engine, "kraken", start, 30)
            return len(trades) + len(books)
        finally:
            await engine.dispose()

    stored = asyncio.run(write())
    monkeypatch.setenv("AETHER_DATABASE_URL", settings.database_url.get_secret_value())
    common = ["run", "--strategy", "ema_cross", "--from-store", "--symbol", SYMBOL, "--out", str(tmp_path)]
    end = start + timedelta(minutes=30)
    result = CliRunner().invoke(app, [*common, "--start", start.isoformat(), "--end", end.isoformat()])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "result.json").read_text())["metrics"]["events"] == stored

    late = (end + timedelta(minutes=30)).isoformat()
    gapped = CliRunner().invoke(app, [*common, "--start", start.isoformat(), "--end", late])
    assert gapped.exit_code == 2
    assert "BTC/USD: gap from" in gapped.output
    assert "exceeds 0:10:00" in gapped.output
    missing = CliRunner().invoke(app, [*common, "--start", start.isoformat()])
    assert missing.exit_code == 2
    assert "--from-store needs --start and --end" in missing.output


def test_ml_retrain_scores_its_fold_on_the_stores_candles(
    settings: AetherSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = datetime(2031, 1, 1, tzinfo=UTC) + timedelta(days=uuid.uuid4().int % 3000, hours=3)
    end = start + timedelta(minutes=20)

    async def write() -> None:
        engine = create_engine(settings)
        try:
            await _write(engine, "kraken", start, 20)
            await store.refresh_aggregates(engine, ["1m"])
        finally:
            await engine.dispose()

    asyncio.run(write())
    monkeypatch.setenv("AETHER_DATABASE_URL", settings.database_url.get_secret_value())
    backtest = _fold_backtest("kraken", SYMBOL, (start, end), None, "0.001", "100000")
    assert [bar.start for bar in backtest.bars] == [start + timedelta(minutes=m) for m in range(20)]
    assert backtest.bars[4].close == Decimal(1004)  # minute m traded at 1000 + m % 7
    with pytest.raises(typer.Exit):  # past the stored range: a gap, named, never bridged
        _fold_backtest("kraken", SYMBOL, (start, end + timedelta(minutes=30)), None, "0.001", "100000")
