"""The hedge service as its integration tests drive it: role tokens, balance events, the `Hedge` handle on a
running app (prices, balances, status)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from services.hedge.adapters import HedgeAdapters
from services.hedge.consumers import handle_balance_event
from services.hedge.repository import HedgeRepository
from shared.auth.roles import Role
from shared.contracts.balances import BalanceChanged
from shared.contracts.base import outbox_payload
from shared.db import UnitOfWork
from shared.events import Envelope
from tests.kit.auth import token

T0 = datetime(2026, 1, 1, tzinfo=UTC)


RISK = token(Role.RISK)
DIRECTOR = token(Role.DIRECTOR)
VIEWER = token(Role.VIEWER)
OPERATOR = token(Role.OPERATOR)

VERSIONS = itertools.count(1)  # BalanceChanged versions only grow, across restarts of the service too


def balance_changed(account: str, asset: str, total: str, reserved: str = "0", version: int | None = None) -> Envelope:
    """What the OMS publishes on oms.balance-events.v1 after a change of one asset balance."""
    event = BalanceChanged(
        account_id=account,
        asset=asset,
        total=Decimal(total),
        available=Decimal(total) - Decimal(reserved),
        reserved=Decimal(reserved),
        version=next(VERSIONS) if version is None else version,
        changed_at=datetime.now(UTC),
    )
    return Envelope.new(type=BalanceChanged.TYPE, producer="oms", aggregate_id=account, payload=outbox_payload(event))


class Hedge:
    def __init__(self, client: httpx.AsyncClient, adapters: HedgeAdapters) -> None:
        self.client = client
        self.adapters = adapters

    @property
    def symbol(self) -> str:
        return self.adapters.settings.hedge_symbol

    async def price(self, price: str, at: datetime) -> None:
        async with UnitOfWork(self.adapters.context.sessionmaker) as uow:
            await self.adapters.evaluation.observe_price(uow.session, self.symbol, Decimal(price), at)

    async def balances(self, account: str, totals: dict[str, str]) -> None:
        """One BalanceChanged per asset through the balance consumer's handler, then what the tick does once they
        are quiet; the account is tracked first (as a fill, an override or a policy would make it)."""
        for asset, total in totals.items():
            async with UnitOfWork(self.adapters.context.sessionmaker) as uow:
                await HedgeRepository(uow.session).ensure_account(account)
                await handle_balance_event(self.adapters, uow.session, balance_changed(account, asset, total))
        await self.adapters.evaluation.revalue(account)

    async def holdings(self, account: str, usd: str, base: str) -> None:
        await self.balances(account, {"USD": usd, self.adapters.settings.base_asset: base})

    async def status(self, account: str) -> dict[str, Any]:
        response = await self.client.get(f"/hedge/status/{account}", headers=VIEWER)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


HedgeFactory = Callable[..., AbstractAsyncContextManager[Hedge]]
