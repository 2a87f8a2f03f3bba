"""The hand-computed reports scenario (docs/reports.md), as the OMS and the market-data feed publish it.

Account `acct` (quote USD), UTC days. Day 1 (2026-01-04): a 10,000 USD deposit at 10:00. Day 2 (2026-01-05):
08:00 book BTC/USD 19,990 / 20,010 (mid 20,000); 09:00 buy 0.2 BTC at 20,000, fee 4; 11:00 a delta moves the
book to 20,990 / 21,010 (mid 21,000); 12:00 deposit 4,804 USD mid-day; 14:00 book 21,990 / 22,010 (mid 22,000);
14:30 a trade prints at 25,000 (ignored: a book mid exists); 15:00 partial sell 0.1 of a 0.3 order at 22,000,
fee 2; 16:00 withdrawal 3,198 USD; 20:00 book 22,590 / 22,610 (mid 22,600). The expected figures are worked
out by hand in tests/unit/test_pnl.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from shared.contracts.balances import BalanceChanged
from shared.contracts.cashflows import CashFlowKind, CashFlowRecorded
from shared.contracts.orders import OrderFilled
from shared.contracts.registry import new_envelope
from shared.domain.types import Liquidity, OrderSide, OrderStatus
from shared.events import Envelope
from shared.events.topics import OMS_BALANCE_EVENTS, OMS_CASHFLOW_EVENTS, OMS_ORDER_EVENTS
from shared.marketdata import BOOK_TOPIC, TRADE_TOPIC, BookDelta, BookSnapshot, Level, Trade, to_envelope

DAY_1 = date(2026, 1, 4)
DAY_2 = date(2026, 1, 5)
SYMBOL = "BTC/USD"


def at(day: date, hour: int, minute: int = 0) -> datetime:
    """An instant of the scenario (UTC)."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


@dataclass(frozen=True)
class Expected:
    """The hand-computed figures of day 2 (and day 1's NAV)."""

    day_1_nav: Decimal = Decimal(10_000)
    day_1_return_pct: Decimal = Decimal(0)
    start_nav: Decimal = Decimal(10_000)
    end_nav: Decimal = Decimal(12_060)
    net_flows: Decimal = Decimal(1_606)
    pnl: Decimal = Decimal(454)
    return_pct: Decimal = Decimal("3.82240136")
    realized: Decimal = Decimal(200)
    unrealized: Decimal = Decimal(260)
    fees: Decimal = Decimal(6)
    turnover: Decimal = Decimal(6_200)
    position: Decimal = Decimal("0.1")
    average_cost: Decimal = Decimal(20_000)
    end_mark: Decimal = Decimal(22_600)
    exposure_usd: Decimal = Decimal(9_800)
    exposure_btc: Decimal = Decimal(2_260)


EXPECTED = Expected()


def _levels(*pairs: tuple[str, str]) -> list[Level]:
    return [Level(price=Decimal(price), qty=Decimal(qty)) for price, qty in pairs]


def _balance(account: str, asset: str, total: str, version: int, when: datetime) -> tuple[str, Envelope]:
    message = BalanceChanged(
        account_id=account, asset=asset, total=Decimal(total), available=Decimal(total), reserved=Decimal(0),
        version=version, changed_at=when,
    )  # fmt: skip
    return OMS_BALANCE_EVENTS, new_envelope(message, producer="oms", aggregate_id=account, now=when)


def _flow(account: str, kind: CashFlowKind, amount: str, reference: str, when: datetime) -> tuple[str, Envelope]:
    message = CashFlowRecorded(
        account_id=account, kind=kind, asset="USD", amount=Decimal(amount), reference=reference, occurred_at=when
    )
    return OMS_CASHFLOW_EVENTS, new_envelope(message, producer="oms", aggregate_id=account, now=when)


def _fill(
    account: str, order: str, side: OrderSide, quantity: str, price: str, fee: str, ordered: str, when: datetime
) -> tuple[str, Envelope]:
    leaves = Decimal(ordered) - Decimal(quantity)
    message = OrderFilled(
        order_id=order, occurred_at=when, version=3, account_id=account, client_order_id=f"c-{order}", symbol=SYMBOL,
        side=side, status=OrderStatus.FILLED if leaves == 0 else OrderStatus.PARTIALLY_FILLED,
        trade_id=f"t-{order}", quantity=Decimal(quantity), price=Decimal(price), fee=Decimal(fee),
        liquidity=Liquidity.TAKER, filled_quantity=Decimal(quantity), leaves_quantity=leaves, is_final=leaves == 0,
    )  # fmt: skip
    return OMS_ORDER_EVENTS, new_envelope(message, producer="oms", aggregate_id=order, now=when)


def _book(bid: str, ask: str, when: datetime, sequence: int) -> tuple[str, Envelope]:
    message = BookSnapshot(
        venue="kraken", symbol=SYMBOL, bids=_levels((bid, "1")), asks=_levels((ask, "1")), timestamp=when,
        sequence=sequence,
    )  # fmt: skip
    return BOOK_TOPIC, to_envelope(message, "marketdata")


def scenario(account: str, prefix: str) -> list[tuple[str, Envelope]]:
    """(platform topic, envelope) in publishing order; `prefix` keeps references and order ids unique per run."""
    delta = BookDelta(
        venue="kraken", symbol=SYMBOL, bids=_levels(("19990", "0"), ("20990", "1")),
        asks=_levels(("20010", "0"), ("21010", "1")), timestamp=at(DAY_2, 11), sequence=2,
    )  # fmt: skip
    trade = Trade(
        venue="kraken", symbol=SYMBOL, trade_id=f"{prefix}-x", price=Decimal(25_000), qty=Decimal(1),
        side=OrderSide.BUY, timestamp=at(DAY_2, 14, 30),
    )  # fmt: skip
    return [
        _flow(account, CashFlowKind.DEPOSIT, "10000", f"{prefix}-dep-1", at(DAY_1, 10)),
        _balance(account, "USD", "10000", 1, at(DAY_1, 10)),
        _book("19990", "20010", at(DAY_2, 8), 1),
        _fill(account, f"{prefix}-o1", OrderSide.BUY, "0.2", "20000", "4", "0.2", at(DAY_2, 9)),
        _balance(account, "USD", "5996", 2, at(DAY_2, 9)),
        _balance(account, "BTC", "0.2", 1, at(DAY_2, 9)),
        (BOOK_TOPIC, to_envelope(delta, "marketdata")),
        _flow(account, CashFlowKind.DEPOSIT, "4804", f"{prefix}-dep-2", at(DAY_2, 12)),
        _balance(account, "USD", "10800", 3, at(DAY_2, 12)),
        _book("21990", "22010", at(DAY_2, 14), 3),
        (TRADE_TOPIC, to_envelope(trade, "marketdata")),
        _fill(account, f"{prefix}-o2", OrderSide.SELL, "0.1", "22000", "2", "0.3", at(DAY_2, 15)),
        _balance(account, "USD", "12998", 4, at(DAY_2, 15)),
        _balance(account, "BTC", "0.1", 2, at(DAY_2, 15)),
        _flow(account, CashFlowKind.WITHDRAWAL, "3198", f"{prefix}-wd-1", at(DAY_2, 16)),
        _balance(account, "USD", "9800", 5, at(DAY_2, 16)),
        _book("22590", "22610", at(DAY_2, 20), 4),
    ]
