"""The PnL-jump rule and the position it values (shared/domain/pnl.py's `Position`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.analytics.pnl_jumps import biggest_move
from shared.domain.pnl import Fill, Position
from shared.domain.types import OrderSide

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_biggest_move_is_against_the_farthest_point_of_the_window() -> None:
    points = [(T0, Decimal(10)), (T0 + timedelta(seconds=1), Decimal(-50)), (T0 + timedelta(seconds=2), Decimal(40))]
    assert biggest_move(points, Decimal(30)) == (T0 + timedelta(seconds=1), Decimal(-50))
    assert biggest_move(points, Decimal(-50)) == (T0 + timedelta(seconds=2), Decimal(40))
    assert biggest_move([], Decimal(30)) is None


def test_marked_pnl_is_realized_plus_unrealized_less_fees_and_unknown_without_a_mark() -> None:
    position = Position()
    position.apply(Fill("BTC/USD", OrderSide.BUY, Decimal(2), Decimal(100), Decimal(1), T0))
    position.apply(Fill("BTC/USD", OrderSide.SELL, Decimal(1), Decimal(130), Decimal(1), T0))
    assert position.marked_pnl(Decimal(90)) == Decimal(30) - Decimal(2) + Decimal(-10)
    assert position.marked_pnl(None) is None
    position.apply(Fill("BTC/USD", OrderSide.SELL, Decimal(1), Decimal(100), Decimal(0), T0))
    assert position.marked_pnl(None) == Decimal(28)
