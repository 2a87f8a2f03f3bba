"""Issue 14, item 6: the cross-asset SYNTHETIC source (BTC, ETH and a stablecoin against USD) in time order."""

from __future__ import annotations

import itertools
from decimal import Decimal

from data.replay.source import cross_asset_market
from shared.marketdata import Trade
from tests.kit.marketdata import NOW


def test_three_markets_interleave_in_time_order_and_the_stablecoin_keeps_its_peg() -> None:
    messages = list(itertools.islice(cross_asset_market(seed=11, start_at=NOW).messages(), 6_000))
    assert {m.symbol for m in messages} == {"BTC/USD", "ETH/USD", "USDT/USD"}
    times = [m.timestamp for m in messages]
    assert times == sorted(times)
    stable = [m.price for m in messages if isinstance(m, Trade) and m.symbol == "USDT/USD"]
    assert stable
    assert all(Decimal("0.99") < price < Decimal("1.01") for price in stable)


def test_the_same_seed_gives_the_same_messages() -> None:
    first = list(itertools.islice(cross_asset_market(seed=5, start_at=NOW).messages(), 500))
    again = list(itertools.islice(cross_asset_market(seed=5, start_at=NOW).messages(), 500))
    other = list(itertools.islice(cross_asset_market(seed=6, start_at=NOW).messages(), 500))
    assert first == again
    assert first != other
