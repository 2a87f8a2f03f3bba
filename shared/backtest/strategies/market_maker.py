"""A passive market maker: post-only quotes `spread_bps` around mid, requoted when mid moves, inventory capped."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import ClassVar

from shared.backtest.strategy import OrderUpdate, Param, Strategy, StrategyContext
from shared.domain.book import OrderBook
from shared.domain.types import OrderSide, OrderType

TEN_THOUSAND = Decimal(10_000)
OPEN = ("submitted", "accepted")


class PassiveMarketMaker(Strategy):
    """Keeps one bid and one ask around mid; skips the side that would take inventory past `max_position`."""

    name = "market_maker"
    params: ClassVar = {
        "spread_bps": Param(Decimal(10), Decimal("0.5"), Decimal(1000)),
        "requote_bps": Param(Decimal(5), Decimal("0.1"), Decimal(1000)),
        "quantity": Param(Decimal("0.01"), Decimal("0.00001"), Decimal(1000)),
        "max_position": Param(Decimal("0.05"), Decimal(0), Decimal(10_000)),
        "tick": Param(Decimal("0.1"), Decimal("0.00000001"), Decimal(1000)),
    }

    def __init__(self, **values: Decimal) -> None:
        super().__init__(**values)
        self._quotes: dict[str, dict[OrderSide, str]] = {}
        self._quoted_mid: dict[str, Decimal] = {}
        self._open: set[str] = set()

    def on_book(self, ctx: StrategyContext, book: OrderBook) -> None:
        mid = book.mid
        if mid is None:
            return
        last = self._quoted_mid.get(book.symbol)
        if last is not None and abs(mid - last) / last * TEN_THOUSAND < self.values["requote_bps"]:
            return
        self._quoted_mid[book.symbol] = mid
        quotes = self._quotes.setdefault(book.symbol, {})
        for order_id in quotes.values():
            if order_id in self._open:
                ctx.cancel(order_id)
        quotes.clear()
        offset = mid * self.values["spread_bps"] / TEN_THOUSAND / 2
        tick = self.values["tick"]
        held = ctx.position(book.symbol)
        size = self.values["quantity"]
        if held + size <= self.values["max_position"]:
            bid = ((mid - offset) / tick).to_integral_value(ROUND_FLOOR) * tick
            quotes[OrderSide.BUY] = self._quote(ctx, book.symbol, OrderSide.BUY, size, bid)
        if held >= size:
            ask = ((mid + offset) / tick).to_integral_value(ROUND_CEILING) * tick
            quotes[OrderSide.SELL] = self._quote(ctx, book.symbol, OrderSide.SELL, size, ask)

    def _quote(self, ctx: StrategyContext, symbol: str, side: OrderSide, size: Decimal, price: Decimal) -> str:
        order_id = ctx.submit(symbol, side, size, type=OrderType.LIMIT, limit_price=price, post_only=True)
        self._open.add(order_id)
        return order_id

    def on_order(self, ctx: StrategyContext, update: OrderUpdate) -> None:
        if update.status == "cancel_rejected":  # the cancel overtook the quote: cancel again
            ctx.cancel(update.order_id)
        elif update.status not in OPEN:
            self._open.discard(update.order_id)
