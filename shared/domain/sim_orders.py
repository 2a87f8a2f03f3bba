"""Our own orders inside the simulated matching engine (`shared.domain.matching`), and where it keeps them.

`RestingOrders` holds the resting limit orders per side in priority order (best price first, then time);
`StopTriggers` holds the stops waiting for a trade print through their trigger. Plain containers: the
matching rules stay in the engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from sortedcontainers import SortedKeyList

from shared.domain.types import OrderSide, OrderType, TimeInForce


@dataclass(frozen=True, slots=True)
class SimOrder:
    order_id: str
    side: OrderSide
    type: OrderType
    quantity: Decimal
    limit_price: Decimal | None = None
    trigger_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: bool = False


@dataclass(slots=True, eq=False)
class RestingOrder:
    order: SimOrder
    price: Decimal
    leaves: Decimal
    sequence: int
    queue_ahead: Decimal
    triggered: bool


@dataclass(slots=True, eq=False)
class WaitingStop:
    order: SimOrder
    trigger: Decimal
    sequence: int


class RestingOrders:
    """Our resting orders by id, and per side in priority order: best price first, then time."""

    def __init__(self) -> None:
        self._by_id: dict[str, RestingOrder] = {}
        self._buys: SortedKeyList[RestingOrder, tuple[Decimal, int]] = SortedKeyList(
            key=lambda r: (-r.price, r.sequence)
        )
        self._sells: SortedKeyList[RestingOrder, tuple[Decimal, int]] = SortedKeyList(
            key=lambda r: (r.price, r.sequence)
        )

    def __contains__(self, order_id: str) -> bool:
        return order_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[RestingOrder]:
        return iter(self._by_id.values())

    def get(self, order_id: str) -> RestingOrder | None:
        return self._by_id.get(order_id)

    def clear(self) -> None:
        self._by_id.clear()
        self._buys.clear()
        self._sells.clear()

    def add(self, resting: RestingOrder) -> None:
        self._by_id[resting.order.order_id] = resting
        self.side(resting.order.side).add(resting)

    def remove(self, resting: RestingOrder) -> None:
        del self._by_id[resting.order.order_id]
        self.side(resting.order.side).remove(resting)

    def side(self, side: OrderSide) -> SortedKeyList[RestingOrder, tuple[Decimal, int]]:
        """Our orders of `side`, best price first, then time."""
        return self._buys if side is OrderSide.BUY else self._sells

    def at_price(self, side: OrderSide, price: Decimal, last_sequence: int) -> list[RestingOrder]:
        """Our orders of `side` at `price` (sequences up to `last_sequence`), in time priority."""
        key = -price if side is OrderSide.BUY else price
        return list(self.side(side).irange_key((key, 0), (key, last_sequence)))


def _falls(order: SimOrder) -> bool:
    """Whether the trigger fires on a price at or below it (sell stop-loss, buy take-profit)."""
    return (order.side is OrderSide.SELL) == (order.type in {OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT})


class StopTriggers:
    """Untriggered stops: "falling" fire when a print is <= trigger (highest trigger first), "rising" when >=."""

    def __init__(self) -> None:
        self._by_id: dict[str, WaitingStop] = {}
        self._falling: SortedKeyList[WaitingStop, tuple[Decimal, int]] = SortedKeyList(
            key=lambda w: (-w.trigger, w.sequence)
        )
        self._rising: SortedKeyList[WaitingStop, tuple[Decimal, int]] = SortedKeyList(
            key=lambda w: (w.trigger, w.sequence)
        )

    def __contains__(self, order_id: str) -> bool:
        return order_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[WaitingStop]:
        return iter(self._by_id.values())

    def clear(self) -> None:
        self._by_id.clear()
        self._falling.clear()
        self._rising.clear()

    def add(self, order: SimOrder, sequence: int) -> None:
        trigger = order.trigger_price if order.trigger_price is not None else Decimal(0)  # validated: never None
        waiting = WaitingStop(order, trigger, sequence)
        self._by_id[order.order_id] = waiting
        (self._falling if _falls(order) else self._rising).add(waiting)

    def remove(self, order_id: str) -> WaitingStop | None:
        waiting = self._by_id.pop(order_id, None)
        if waiting is not None:
            (self._falling if _falls(waiting.order) else self._rising).remove(waiting)
        return waiting

    def fire(self, price: Decimal) -> list[WaitingStop]:
        """Remove and return the stops a print at `price` passes, in time priority."""
        fired: list[WaitingStop] = []
        while self._falling and price <= self._falling[0].trigger:
            fired.append(self._falling.pop(0))
        while self._rising and price >= self._rising[0].trigger:
            fired.append(self._rising.pop(0))
        for waiting in fired:
            del self._by_id[waiting.order.order_id]
        return sorted(fired, key=lambda w: w.sequence)
