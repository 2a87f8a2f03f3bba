"""Venue choice per account: one `VenueAdapter` that sends each account's calls to the venue it trades on.

`VenueRouter(venues={"paper": ..., "kraken": ...}, routes={account: "kraken"}, default="paper")`. An account with
no route goes to `default`; with no default it is refused (`VenueNotReady`): an account is never traded
on a venue nobody chose for it, and an account routed to Kraken whose keys are unusable is not ready there
(`AccountNotReady`), never sent to paper. Fill sequences are per venue: an account that changes venue starts its
fill cursor again at 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Protocol, runtime_checkable

from shared.domain.types import AccountId, Asset, ClientOrderId
from shared.venues.base import (
    Funding,
    Transfers,
    UpdateListener,
    VenueAdapter,
    VenueBalance,
    VenueFill,
    VenueNotReady,
    VenueOrder,
    VenueOrderRequest,
    VenueRejected,
    Withdrawals,
)


@runtime_checkable
class AccountReadiness(Protocol):
    """A venue that can tell which accounts cannot trade there now (unusable keys), with the reason."""

    async def not_ready(self, account_ids: Iterable[AccountId]) -> dict[AccountId, str]:
        """The accounts among `account_ids` that cannot trade here, with why."""
        ...


class VenueRoutingError(ValueError):
    """A route or the default names a venue that is not configured."""


class VenueRouter:
    """Dispatches every protocol call by account; listeners hear every venue."""

    name = "router"

    def __init__(
        self, venues: Mapping[str, VenueAdapter], routes: Mapping[str, str], default: str | None = None
    ) -> None:
        unknown = sorted({*routes.values(), *([default] if default else [])} - set(venues))
        if unknown:
            raise VenueRoutingError(f"accounts are routed to venues that are not configured: {', '.join(unknown)}")
        self.venues = dict(venues)
        self.routes = dict(routes)
        self.default = default

    def venue_name(self, account_id: str) -> str:
        """The venue the account trades on; `VenueNotReady` when it has none."""
        name = self.routes.get(account_id, self.default)
        if name is None:
            raise VenueNotReady(account_id, "no venue is configured for it")
        return name

    def venue_of(self, account_id: str) -> VenueAdapter:
        """The adapter of the account's venue."""
        return self.venues[self.venue_name(account_id)]

    def venues_in_use(self) -> dict[str, VenueAdapter]:
        """The venues some account trades on (start-up reconciliation runs against each)."""
        names = {*self.routes.values(), *([self.default] if self.default else [])}
        return {name: self.venues[name] for name in sorted(names)}

    async def not_ready(self, account_ids: Iterable[AccountId]) -> dict[AccountId, str]:
        """Accounts that cannot trade now, with the reason: no venue, or their venue refuses them (keys)."""
        reasons: dict[AccountId, str] = {}
        by_venue: dict[str, list[AccountId]] = {}
        for account_id in account_ids:
            try:
                by_venue.setdefault(self.venue_name(account_id), []).append(account_id)
            except VenueNotReady as exc:
                reasons[account_id] = exc.reason
        for name, accounts in by_venue.items():
            venue = self.venues[name]
            if isinstance(venue, AccountReadiness):
                reasons.update(await venue.not_ready(accounts))
        return reasons

    def subscribe(self, listener: UpdateListener) -> None:
        """Listen to every configured venue."""
        for venue in self.venues.values():
            venue.subscribe(listener)

    async def submit(self, request: VenueOrderRequest) -> VenueOrder:
        """Place the order on the account's venue."""
        return await self.venue_of(request.account_id).submit(request)

    async def cancel(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder:
        """Cancel on the account's venue."""
        return await self.venue_of(account_id).cancel(account_id, client_order_id)

    async def query(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder | None:
        """Query the account's venue."""
        return await self.venue_of(account_id).query(account_id, client_order_id)

    async def open_orders(self, account_id: AccountId) -> Sequence[VenueOrder]:
        """Open orders at the account's venue."""
        return await self.venue_of(account_id).open_orders(account_id)

    async def fills_since(self, account_id: AccountId, after_sequence: int) -> Sequence[VenueFill]:
        """Fills at the account's venue after its cursor."""
        return await self.venue_of(account_id).fills_since(account_id, after_sequence)

    async def balances(self, account_id: AccountId) -> Sequence[VenueBalance]:
        """Balances at the account's venue."""
        return await self.venue_of(account_id).balances(account_id)

    async def deposit(self, account_id: AccountId, asset: Asset, amount: Decimal, reference: str) -> VenueBalance:
        """Credit the account where the venue can be funded by us (paper); real exchanges are funded outside."""
        venue = self.venue_of(account_id)
        if not isinstance(venue, Funding):
            raise VenueRejected("funding_not_supported", f"{self.venue_name(account_id)} accounts are funded outside")
        return await venue.deposit(account_id, asset, amount, reference)

    async def withdraw(self, account_id: AccountId, asset: Asset, amount: Decimal, reference: str) -> VenueBalance:
        """Debit the account where the venue is one we fund (paper); real exchanges are withdrawn from outside."""
        venue = self.venue_of(account_id)
        if not isinstance(venue, Withdrawals):
            raise VenueRejected("funding_not_supported", f"{self.venue_name(account_id)} accounts are funded outside")
        return await venue.withdraw(account_id, asset, amount, reference)

    async def transfer(
        self, source: AccountId, destination: AccountId, asset: Asset, amount: Decimal, reference: str
    ) -> tuple[VenueBalance, VenueBalance]:
        """Move money between two accounts of one venue that we fund (paper); never across venues."""
        venue = self.venue_of(source)
        if self.venue_name(destination) != self.venue_name(source):
            raise VenueRejected("cross_venue_transfer", "both accounts of a transfer must be on the same venue")
        if not isinstance(venue, Transfers):
            raise VenueRejected("transfers_not_supported", f"{self.venue_name(source)} accounts are funded outside")
        return await venue.transfer(source, destination, asset, amount, reference)


def account_venue_name(venue: VenueAdapter, account_id: str) -> str:
    """The name of the venue `account_id` trades on behind `venue` (a router, or one venue for every account)."""
    return venue.venue_name(account_id) if isinstance(venue, VenueRouter) else venue.name


def account_venue(venue: VenueAdapter, account_id: str) -> VenueAdapter:
    """The adapter `account_id` trades on behind `venue`."""
    return venue.venue_of(account_id) if isinstance(venue, VenueRouter) else venue


def venues_in_use(venue: VenueAdapter) -> dict[str, VenueAdapter]:
    """Every venue some account trades on behind `venue`, by name."""
    return venue.venues_in_use() if isinstance(venue, VenueRouter) else {venue.name: venue}


async def account_not_ready(venue: VenueAdapter, account_id: AccountId) -> str | None:
    """Why `account_id` cannot trade at its venue now, or None when it can."""
    if isinstance(venue, (VenueRouter, AccountReadiness)):
        return (await venue.not_ready([account_id])).get(account_id)
    return None
