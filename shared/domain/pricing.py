"""Reference prices for sizing orders before they trade.

A market buy has no price of its own: the OMS reserves quote for it at the worst price of the visible levels
it would walk, times one plus `MARKET_BUY_SLIPPAGE` (the default of the OMS setting `market_buy_slippage`).
Services that size market buys ahead of the OMS (the hedge) use the same figure so the OMS does not deny for
want of the buffer.
"""

from __future__ import annotations

from decimal import Decimal

MARKET_BUY_SLIPPAGE = Decimal("0.05")  # fraction of the walk price reserved on top for a market buy


def market_buy_reservation_price(walk_price: Decimal, slippage: Decimal = MARKET_BUY_SLIPPAGE) -> Decimal:
    """The price a market buy reserves at: the book's walk price plus the slippage buffer."""
    return walk_price * (1 + slippage)
