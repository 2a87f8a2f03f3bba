"""Reporting math (shared/domain/pnl.py): the hand-computed scenario of tests/kit/reports.py, and properties."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.pnl import (
    BalancePoint,
    CashFlow,
    Fill,
    Mark,
    Portfolio,
    Unpriced,
    combine_instruments,
    compound_pct,
    day_bounds,
    drawdowns_pct,
    pnl_by_instrument,
    time_weighted_return_pct,
)
from shared.domain.types import OrderSide
from tests.kit.reports import DAY_1, DAY_2, EXPECTED, SYMBOL, at

D = Decimal


def _scenario() -> tuple[Portfolio, list[Fill]]:
    book = Portfolio(quote="USD")
    for asset, total, when in [
        ("USD", "10000", at(DAY_1, 10)),
        ("USD", "5996", at(DAY_2, 9)),
        ("BTC", "0.2", at(DAY_2, 9)),
        ("USD", "10800", at(DAY_2, 12)),
        ("USD", "12998", at(DAY_2, 15)),
        ("BTC", "0.1", at(DAY_2, 15)),
        ("USD", "9800", at(DAY_2, 16)),
    ]:
        book.add_balance("acct", BalancePoint(asset, D(total), when))
    for price, hour in [("20000", 8), ("21000", 11), ("22000", 14), ("22600", 20)]:
        book.add_mark(Mark(SYMBOL, D(price), "book_mid", at(DAY_2, hour)))
    book.add_flow(CashFlow("USD", D(10_000), at(DAY_1, 10)))
    book.add_flow(CashFlow("USD", D(4_804), at(DAY_2, 12)))
    book.add_flow(CashFlow("USD", D(-3_198), at(DAY_2, 16)))
    fills = [
        Fill(SYMBOL, OrderSide.BUY, D("0.2"), D(20_000), D(4), at(DAY_2, 9)),
        Fill(SYMBOL, OrderSide.SELL, D("0.1"), D(22_000), D(2), at(DAY_2, 15)),
    ]
    return book, fills


def test_the_hand_computed_day_matches_to_the_last_decimal() -> None:
    book, fills = _scenario()
    start, end = day_bounds(DAY_2, ZoneInfo("UTC"))
    day = book.period(start, end)
    # Start of day 2: 10,000 USD, no BTC -> NAV 10,000.
    # 09:00 buy 0.2 BTC at 20,000 + fee 4: USD 10,000 - 4,000 - 4 = 5,996; BTC 0.2.
    # 12:00 just before the 4,804 deposit: 5,996 + 0.2 x 21,000 (mid at 11:00) = 10,196 -> factor 10,196 / 10,000
    #       = 1.0196; after it: 10,800 + 4,200 = 15,000.
    # 16:00 just before the 3,198 withdrawal: sold 0.1 at 22,000 - fee 2 -> USD 12,998, BTC 0.1 at mid 22,000:
    #       12,998 + 2,200 = 15,198 -> factor 15,198 / 15,000 = 1.0132; after it: 9,800 + 2,200 = 12,000.
    # 24:00 end: 9,800 + 0.1 x 22,600 = 12,060 -> factor 12,060 / 12,000 = 1.005.
    # Return: 1.0196 x 1.0132 x 1.005 - 1 = 1.03305872 x 1.005 - 1 = 1.0382240136 - 1 = 3.82240136 %.
    # PnL: 12,060 - 10,000 - (4,804 - 3,198) = 454 (deposits and withdrawals are not profit).
    assert day.start_nav == EXPECTED.start_nav
    assert day.end.nav == EXPECTED.end_nav
    assert day.net_flows == EXPECTED.net_flows
    assert day.pnl == EXPECTED.pnl
    assert day.return_pct == EXPECTED.return_pct
    assert dict(day.end.exposure) == {"BTC": EXPECTED.exposure_btc, "USD": EXPECTED.exposure_usd}
    assert [(m.symbol, m.price, m.observed_at) for m in day.end.marks] == [(SYMBOL, D(22_600), at(DAY_2, 20))]

    # Average cost 20,000; realized (22,000 - 20,000) x 0.1 = 200; unrealized (22,600 - 20,000) x 0.1 = 260;
    # fees 4 + 2 = 6; turnover 4,000 + 2,200 = 6,200. And 200 + 260 - 6 = 454, the day's PnL.
    (btc,) = pnl_by_instrument(fills, {SYMBOL: day.end.marks[0]}, since=start)
    assert (btc.position, btc.average_cost, btc.realized, btc.unrealized) == (
        EXPECTED.position,
        EXPECTED.average_cost,
        EXPECTED.realized,
        EXPECTED.unrealized,
    )
    assert (btc.fees, btc.turnover, btc.fills) == (EXPECTED.fees, EXPECTED.turnover, 2)
    assert btc.unrealized is not None
    assert btc.realized + btc.unrealized - btc.fees == day.pnl


def test_a_deposit_into_an_empty_account_is_no_return_and_no_profit() -> None:
    book, _ = _scenario()
    day = book.period(*day_bounds(DAY_1, ZoneInfo("UTC")))
    # 0 before the deposit (no capital: that sub-period adds nothing), 10,000 -> 10,000 after it: 0 %.
    assert (day.start_nav, day.end.nav, day.pnl, day.return_pct) == (0, EXPECTED.day_1_nav, 0, 0)
    before = book.period(*day_bounds(DAY_1 - timedelta(days=1), ZoneInfo("UTC")))
    assert before.return_pct is None


def test_days_cut_in_the_account_time_zone_move_the_flows() -> None:
    book, _ = _scenario()
    # In New York (UTC-5) day 2 ends at 05:00 UTC on January 6: the 20:00 UTC mark still counts; day 1 in New
    # York (Jan 4 05:00 UTC to Jan 5 05:00 UTC) holds the first deposit.
    start, end = day_bounds(DAY_2, ZoneInfo("America/New_York"))
    assert (start.astimezone(UTC), end.astimezone(UTC)) == (at(DAY_2, 5), at(date(2026, 1, 6), 5))
    assert book.period(start, end).end.nav == EXPECTED.end_nav
    assert book.period(*day_bounds(DAY_1, ZoneInfo("America/New_York"))).net_flows == D(10_000)


def test_a_balance_without_a_mark_makes_the_nav_unknown() -> None:
    book, _ = _scenario()
    assert book.value_at(at(DAY_2, 10)).nav == D(5_996) + D("0.2") * 20_000  # the 08:00 mark prices BTC
    book.add_balance("acct", BalancePoint("ETH", D(1), at(DAY_2, 9)))
    with pytest.raises(Unpriced, match="ETH/USD"):
        book.value_at(at(DAY_2, 10))
    fresh = Portfolio(quote="USD")
    fresh.add_balance("a", BalancePoint("BTC", D(1), at(DAY_2, 1)))
    with pytest.raises(Unpriced, match=r"no price for BTC/USD at or before 2026-01-05T02:00:00\+00:00"):
        fresh.value_at(at(DAY_2, 2))


def test_the_firm_sums_accounts() -> None:
    book, _ = _scenario()
    book.add_balance("other", BalancePoint("USD", D(1_000), at(DAY_1, 11)))
    assert book.value_at(at(DAY_2, 23)).nav == EXPECTED.end_nav + 1_000


def test_the_firm_adds_up_accounts_that_keep_their_own_cost_basis() -> None:
    when = at(DAY_2, 9)
    mark = Mark(SYMBOL, D(120), "book_mid", when)
    a = pnl_by_instrument([Fill(SYMBOL, OrderSide.BUY, D(1), D(100), D(1), when)], {SYMBOL: mark})
    b = pnl_by_instrument(
        [
            Fill(SYMBOL, OrderSide.BUY, D(1), D(200), D(2), when),
            Fill(SYMBOL, OrderSide.SELL, D(1), D(150), D("1.5"), when + timedelta(hours=1)),
        ],
        {SYMBOL: mark},
    )
    (firm,) = combine_instruments([*a, *b])
    # A: holds 1 bought at 100 (unrealized 20). B: bought at 200, sold at 150 (realized -50). One book for both
    # would have sold at the blended cost 150 (realized 0): each account's own basis is what happened.
    assert (firm.position, firm.average_cost, firm.realized, firm.unrealized) == (D(1), D(100), D(-50), D(20))
    assert (firm.fees, firm.turnover, firm.fills) == (D("4.5"), D(450), 3)


def test_drawdown_runs_on_the_return_index() -> None:
    # +10 %, -50 % (index 0.55, peak 1.1: -50 %), a day without capital, +100 % (index 1.1: back at the peak).
    assert drawdowns_pct([D(10), D(-50), None, D(100)]) == [D(0), D(-50), D(-50), D(0)]
    assert compound_pct([D(10), D(-50), None, D(100)]) == D(10)


# --- properties -------------------------------------------------------------------------------------------------

prices = st.decimals(min_value=D("0.01"), max_value=D(100_000), places=2)
quantities = st.decimals(min_value=D("0.001"), max_value=D(100), places=3)


@given(st.lists(st.tuples(st.booleans(), quantities, prices, prices), min_size=1, max_size=30), prices)
def test_realized_plus_unrealized_is_cash_plus_value_held(
    trades: list[tuple[bool, Decimal, Decimal, Decimal]], mark_price: Decimal
) -> None:
    fills, held, cash = [], D(0), D(0)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    for index, (buy, quantity, price, fee) in enumerate(trades):
        if not buy and quantity > held:
            quantity = held  # spot: never sell what is not held
        if quantity == 0:
            continue
        side = OrderSide.BUY if buy else OrderSide.SELL
        fills.append(Fill(SYMBOL, side, quantity, price, fee / 1000, when + timedelta(seconds=index)))
        held += quantity if buy else -quantity
        cash += -quantity * price if buy else quantity * price
    mark = Mark(SYMBOL, mark_price, "book_mid", when)
    result = pnl_by_instrument(fills, {SYMBOL: mark})
    if not fills:
        assert result == []
        return
    (pnl,) = result
    assert pnl.position == held
    assert pnl.unrealized is not None
    # Gross of fees, average cost: everything earned is the cash from trading plus what is held, at the mark.
    assert abs(pnl.realized + pnl.unrealized - (cash + held * mark_price)) < D("1E-12")
    assert pnl.fees == sum((fill.fee for fill in fills), D(0))


@given(
    st.lists(st.decimals(min_value=D(1), max_value=D(10_000), places=2), min_size=2, max_size=8),
    st.lists(st.decimals(min_value=D(-500), max_value=D(500), places=2), min_size=1, max_size=7),
)
def test_a_cash_flow_alone_never_changes_the_return(navs: list[Decimal], flows: list[Decimal]) -> None:
    # A flat market: NAV moves only by the flows, so the time-weighted return is exactly 0.
    nav, segments = navs[0], []
    for flow in flows:
        if nav + flow <= 0:
            continue
        nav += flow
        segments.append((nav, flow))
    assert time_weighted_return_pct(navs[0], segments, nav) == 0


@given(
    st.decimals(min_value=D(1), max_value=D(10_000), places=2),
    st.decimals(min_value=D("-0.5"), max_value=D(1), places=4),
)
def test_without_flows_the_return_is_the_nav_change(start: Decimal, change: Decimal) -> None:
    end = start * (1 + change)
    result = time_weighted_return_pct(start, [], end)
    assert result is not None
    assert abs(result - change * 100) < D("1E-9")
