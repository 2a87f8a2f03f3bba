"""What every hedge use case shares: the service context (settings, sessions, outbox, clock) and small helpers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.hedge.config import HedgeSettings
from services.hedge.repository import HedgeRepository
from services.hedge.schemas import PolicyFields
from shared.clock import Clock
from shared.contracts.base import Message
from shared.contracts.registry import new_envelope
from shared.db import UnitOfWork
from shared.domain.hedge import HedgePolicy
from shared.domain.ledger import Balance
from shared.domain.money import format_decimal
from shared.events import add_to_outbox
from shared.events.tables import EventTables

PRODUCER = "hedge"
AUTO_ACTOR = "hedge:auto-rearm"


@dataclass(frozen=True)
class HedgeContext:
    """The adapters the use cases share; one per process."""

    settings: HedgeSettings
    sessionmaker: async_sessionmaker[AsyncSession]
    tables: EventTables
    clock: Clock
    on_commit: Callable[[], None]
    default_policy: HedgePolicy

    @classmethod
    def create(
        cls,
        settings: HedgeSettings,
        sessionmaker: async_sessionmaker[AsyncSession],
        tables: EventTables,
        clock: Clock,
        on_commit: Callable[[], None] = lambda: None,
    ) -> HedgeContext:
        return cls(settings, sessionmaker, tables, clock, on_commit, settings.policy())

    def writing(self) -> UnitOfWork:
        """A unit of work whose commit wakes the outbox relay."""
        uow = UnitOfWork(self.sessionmaker)
        uow.after_commit(self.on_commit)
        return uow

    def reading(self) -> UnitOfWork:
        return UnitOfWork(self.sessionmaker)

    async def emit(
        self, session: AsyncSession, topic: str, message: Message, *, account_id: str, aggregate_id: str | None = None
    ) -> None:
        """Queue a contract message keyed by the account in the caller's transaction (aggregate: the account
        unless said otherwise)."""
        envelope = new_envelope(message, producer=PRODUCER, aggregate_id=aggregate_id or account_id, now=self.clock())
        await add_to_outbox(session, self.tables, topic=topic, envelope=envelope, key=account_id)

    async def policy_in_force(self, repo: HedgeRepository, account_id: str) -> HedgePolicy:
        """The account's newest policy version, else the service default."""
        row = await repo.policy(account_id)
        return self.policy_of(row)

    def policy_of(self, row: RowMapping | None) -> HedgePolicy:
        if row is None:
            return self.default_policy
        return PolicyFields.model_validate(row["policy"]).policy(self.default_policy.ewma_lambda)


def text(value: Decimal) -> str:
    """A decimal as it travels on the wire."""
    return format_decimal(value)


def override_active(override: RowMapping | None, now: datetime) -> bool:
    return override is not None and override["expires_at"] > now


def override_target(override: RowMapping | None, now: datetime) -> Decimal | None:
    """The override's fraction while it has not expired."""
    if override is None or override["expires_at"] <= now:
        return None
    target: Decimal = override["target_fraction"]
    return target


def total_of(balances: Mapping[str, Balance], asset: str) -> Decimal:
    balance = balances.get(asset)
    return Decimal(0) if balance is None else balance.total


def free_of(balances: Mapping[str, Balance], asset: str) -> Decimal:
    balance = balances.get(asset)
    return Decimal(0) if balance is None else balance.free


def jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return text(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value
