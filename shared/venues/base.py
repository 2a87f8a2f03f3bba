"""The venue adapter protocol every venue implements (paper, Kraken, later Binance and Coinbase).

The OMS records an order (state SUBMITTED) before it calls `submit`, and treats every error type
differently (CONVENTIONS.md 5): `TemporaryError` may be retried for idempotent calls only,
`VenueRejected` is definitive, `AmbiguousOutcome` means "query by client id, never resubmit under a
new id", `VenueOperationalError` stops trading and pages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol, runtime_checkable

from shared.domain.types import (
    AccountId,
    Asset,
    ClientOrderId,
    Liquidity,
    OrderSide,
    OrderType,
    Symbol,
    TimeInForce,
    TradeId,
    VenueOrderId,
)


class VenueError(Exception):
    """Base of the typed venue errors."""


class TemporaryError(VenueError):
    """Nothing happened at the venue (connection refused, 429, 503 before send): safe to retry idempotent calls."""


class VenueRejected(VenueError):
    """The venue refused the request definitively; never retried."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AmbiguousOutcome(VenueError):
    """The request may or may not have taken effect (timeout or 5xx after send): query by client id."""


class VenueOperationalError(VenueError):
    """The venue or our credentials are unusable (auth failure, maintenance): stop and page."""


class VenueNotReady(VenueOperationalError):
    """The account cannot trade at its venue now (no venue chosen, unusable keys); nothing was sent."""

    def __init__(self, account_id: str, reason: str) -> None:
        super().__init__(f"the venue of account {account_id} is not ready: {reason}")
        self.account_id = account_id
        self.reason = reason


class VenueOrderStatus(StrEnum):
    OPEN = "open"  # accepted, resting or partially filled
    FILLED = "filled"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class VenueOrderRequest:
    """What the venue is asked to do; `client_order_id` is the idempotency key at the venue."""

    account_id: AccountId
    client_order_id: ClientOrderId
    symbol: Symbol
    side: OrderSide
    type: OrderType
    quantity: Decimal
    limit_price: Decimal | None
    trigger_price: Decimal | None
    time_in_force: TimeInForce
    post_only: bool


@dataclass(frozen=True, slots=True)
class VenueFill:
    account_id: AccountId
    client_order_id: ClientOrderId
    venue_order_id: VenueOrderId
    trade_id: TradeId
    symbol: Symbol
    side: OrderSide
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_asset: Asset
    liquidity: Liquidity
    filled_at: datetime
    sequence: int  # venue-wide increasing number: `fills_since(sequence)` resumes after it


@dataclass(frozen=True, slots=True)
class VenueOrder:
    """The venue's view of one order."""

    account_id: AccountId
    client_order_id: ClientOrderId
    venue_order_id: VenueOrderId
    symbol: Symbol
    side: OrderSide
    type: OrderType
    quantity: Decimal
    filled_quantity: Decimal
    status: VenueOrderStatus
    reason: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class VenueBalance:
    account_id: AccountId
    asset: Asset
    total: Decimal
    available: Decimal


VenueUpdate = VenueFill | VenueOrder
# Called after the venue's own state changed (a fill, an order reaching a new status). A listener that
# fails loses nothing: the OMS catches up through `fills_since` and `query` when it reconciles.
UpdateListener = Callable[[VenueUpdate], Awaitable[None]]


class VenueAdapter(Protocol):
    """Every venue passes the contract suite in tests/contract/."""

    name: str

    def subscribe(self, listener: UpdateListener) -> None:
        """Receive fills and order status changes as they happen (resting orders filled by the market)."""
        ...

    async def submit(self, request: VenueOrderRequest) -> VenueOrder:
        """Place an order; idempotent by client order id (a repeat returns the existing order)."""
        ...

    async def cancel(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder:
        """Cancel an open order; cancelling a closed one returns its final state."""
        ...

    async def query(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder | None:
        """The venue's view of the order with this client id, or None when the venue never saw it."""
        ...

    async def open_orders(self, account_id: AccountId) -> Sequence[VenueOrder]:
        """Every open order of the account at the venue."""
        ...

    async def fills_since(self, account_id: AccountId, after_sequence: int) -> Sequence[VenueFill]:
        """Fills of the account with a sequence greater than `after_sequence`, oldest first."""
        ...

    async def balances(self, account_id: AccountId) -> Sequence[VenueBalance]:
        """Balances of the account at the venue."""
        ...


@runtime_checkable
class Funding(Protocol):
    """A venue where money can be credited by us (the paper venue); real exchanges are funded outside."""

    async def deposit(self, account_id: AccountId, asset: Asset, amount: Decimal, reference: str) -> VenueBalance:
        """Credit `amount` of `asset` to the account at the venue, once per `reference` (a repeat credits nothing)."""
        ...


@runtime_checkable
class Withdrawals(Protocol):
    """A venue where we take money out of our own account (the paper venue)."""

    async def withdraw(self, account_id: AccountId, asset: Asset, amount: Decimal, reference: str) -> VenueBalance:
        """Debit `amount` of `asset` from the account's free balance, once per `reference` (a repeat debits nothing)."""
        ...


@runtime_checkable
class Transfers(Protocol):
    """A venue where we move money between two of our own accounts (the paper venue)."""

    async def transfer(
        self, source: AccountId, destination: AccountId, asset: Asset, amount: Decimal, reference: str
    ) -> tuple[VenueBalance, VenueBalance]:
        """Move `amount` of `asset` from `source`'s free balance to `destination`, once per `reference`; the two
        balances after."""
        ...


@dataclass(frozen=True, slots=True)
class BookLevel:
    price: Decimal
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class LatestBookView:
    """The latest top of book of one symbol as the market-data feed cached it (best levels first)."""

    symbol: Symbol
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]
    updated_at: datetime | None

    def mid(self) -> Decimal | None:
        """(best bid + best ask) / 2, or the one side there is; None for an empty book."""
        bests = [side[0].price for side in (self.bids, self.asks) if side]
        if not bests:
            return None
        return sum(bests, Decimal(0)) / len(bests)

    def is_stale(self, now: datetime, max_age_s: float) -> bool:
        """No update for more than `max_age_s` seconds, or no update time at all (unknown age is stale)."""
        return self.updated_at is None or (now - self.updated_at).total_seconds() > max_age_s

    def walk_price(self, side: OrderSide, quantity: Decimal) -> Decimal | None:
        """The worst price a market order of `quantity` on `side` would reach in the visible levels (the last
        visible level when they do not cover it), or None when the opposite side is empty."""
        remaining, worst = quantity, None
        for level in self.asks if side is OrderSide.BUY else self.bids:
            worst = level.price
            remaining -= level.quantity
            if remaining <= 0:
                break
        return worst


class LatestBookUnavailable(Exception):
    """The latest-book cache cannot be read (unreachable): never read as "no market data"."""


class LatestBook(Protocol):
    """Where the latest book of a symbol is read (the paper feed caches it in Redis)."""

    async def get(self, symbol: Symbol) -> LatestBookView | None:
        """The latest book of `symbol`, None when none was published yet; `LatestBookUnavailable` when unreadable."""
        ...
