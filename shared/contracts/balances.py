"""Balances as OMS events: `BalanceChanged` on `oms.balance-events.v1`, keyed by account id.

Services that need an account's balances (hedge now, reports later) keep their own copy from these events
instead of polling the OMS's REST API. `version` grows with every change of one (account, asset) balance: a
consumer keeps the highest version it has seen and drops an event with a lower or equal one (redeliveries and
replays are stale, never applied twice).
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator

from shared.contracts.base import Identifier, Message, NonNegativeDecimal, Timestamp
from shared.domain.money import MONEY_CONTEXT
from shared.events.topics import OMS_BALANCE_EVENTS

__all__ = ["OMS_BALANCE_EVENTS", "BalanceChanged"]

AssetText = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9]+$", examples=["USD"])]


class BalanceChanged(Message):
    """One asset balance of an account after a change (deposit, reservation, release, fill, reconciliation)."""

    TYPE = "BalanceChanged"

    account_id: Identifier
    asset: AssetText
    total: NonNegativeDecimal
    available: NonNegativeDecimal
    reserved: NonNegativeDecimal
    version: Annotated[int, Field(ge=1)]
    changed_at: Timestamp

    @model_validator(mode="after")
    def _adds_up(self) -> Self:
        # In the money context (38 digits, NUMERIC(38,18)): the default 28 digits would round a large balance.
        if MONEY_CONTEXT.add(self.available, self.reserved) != self.total:
            raise ValueError("total must equal available + reserved")
        return self

    def supersedes(self, version: int | None) -> bool:
        """True when this event is newer than the `version` a consumer holds (None: it holds nothing)."""
        return version is None or self.version > version
