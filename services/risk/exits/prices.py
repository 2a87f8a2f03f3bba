"""Use cases: market prices and the clock move open brackets (stops, take-profits, trailing legs, time limits)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from services.risk.exits.repository import ExitRepository
from services.risk.exits.service import BracketWriter, ExitContext
from shared.db import UnitOfWork
from shared.domain.bracket_model import ClockTick, Decision, PriceTick, Step
from shared.domain.brackets import step


class ApplyPrices:
    """Runs each open bracket of the priced symbols through its prices in order (the caller's transaction)."""

    def __init__(self, writer: BracketWriter) -> None:
        self.writer = writer

    async def __call__(self, session: AsyncSession, prices: Mapping[str, Sequence[Decimal]], now: datetime) -> int:
        """The number of decisions made."""
        if not prices:
            return 0
        decisions = 0
        for bracket in await ExitRepository(session).open_for_symbols(sorted(prices)):
            current = bracket
            made: list[Decision] = []
            for price in prices[bracket.symbol]:
                result = step(current, PriceTick(price), now)
                current = result.bracket
                made.extend(result.decisions)
            if current != bracket:
                await self.writer.persist(session, bracket, Step(current, tuple(made)), now)
                decisions += len(made)
        return decisions


class CheckTimeLimits:
    """Ends brackets whose time limit has passed (their own transaction)."""

    def __init__(self, context: ExitContext, writer: BracketWriter) -> None:
        self.context = context
        self.writer = writer

    async def __call__(self) -> int:
        """The number of decisions made."""
        now = self.context.clock()
        decisions = 0
        async with UnitOfWork(self.context.sessionmaker) as uow:
            for bracket in await ExitRepository(uow.session).open_with_time_limit():
                result = step(bracket, ClockTick(), now)
                if result.bracket != bracket:
                    await self.writer.persist(uow.session, bracket, result, now)
                    decisions += len(result.decisions)
            if decisions:
                self.context.wake_after_commit(uow)
        return decisions
