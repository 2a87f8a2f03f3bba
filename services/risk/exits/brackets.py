"""Use cases of the REST side of brackets: read them, move a stop-loss, re-arm a failed bracket."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from services.risk.exits.repository import ExitRepository
from services.risk.exits.service import (
    BracketNotFound,
    BracketWriter,
    ExitContext,
    MoveStopRequest,
    StopLooseningForbidden,
    UnfavourableStopMove,
    audit_bracket,
    run_domain,
)
from shared.db import UnitOfWork
from shared.domain.bracket_model import Bracket, Decision, Step
from shared.domain.brackets import move_stop, rearm
from shared.domain.money import format_decimal


class ReadBrackets:
    """One bracket with its exit orders, or a list of brackets."""

    def __init__(self, context: ExitContext) -> None:
        self.context = context

    async def get(self, bracket_id: str) -> tuple[Bracket, list[dict[str, Any]]]:
        async with UnitOfWork(self.context.sessionmaker) as uow:
            repo = ExitRepository(uow.session)
            bracket = await repo.get(bracket_id)
            if bracket is None:
                raise BracketNotFound(f"exit bracket {bracket_id} does not exist")
            return bracket, await repo.exit_orders_of(bracket_id)

    async def search(self, accounts: Sequence[str] | None, status: str | None, limit: int) -> list[Bracket]:
        async with UnitOfWork(self.context.sessionmaker) as uow:
            return await ExitRepository(uow.session).list_brackets(accounts, status, limit)


class AmendBracket:
    """Re-arm a failed bracket and/or move its stop-loss (each audited); the rules run again at once."""

    def __init__(self, context: ExitContext, writer: BracketWriter) -> None:
        self.context = context
        self.writer = writer

    async def __call__(
        self, bracket_id: str, request: MoveStopRequest, actor: str, *, may_loosen: bool, check: Callable[[str], None]
    ) -> Bracket:
        """Lowering the stop needs the flag and `may_loosen`; a stop above the price exits at once."""
        now = self.context.clock()
        async with UnitOfWork(self.context.sessionmaker) as uow:
            repo = ExitRepository(uow.session)
            bracket = await repo.get(bracket_id, for_update=True)
            if bracket is None:
                raise BracketNotFound(f"exit bracket {bracket_id} does not exist")
            check(bracket.account_id)
            current: Bracket = bracket
            decisions: list[Decision] = []
            if request.rearm:
                current, made = run_domain(lambda: rearm(current, actor, now))
                decisions.extend(made)
                await audit_bracket(uow.session, actor, "risk.exit.rearmed", bracket, {"reason": request.reason}, now)
            if request.stop_loss is not None:
                _check_direction(current, request, may_loosen)
                previous = current.levels.stop_loss
                stop_loss = request.stop_loss
                current, made = run_domain(lambda: move_stop(current, stop_loss, actor, now))
                decisions.extend(made)
                details = {
                    "previous": None if previous is None else format_decimal(previous),
                    "stop_loss": format_decimal(request.stop_loss),
                    "allow_unfavourable": request.allow_unfavourable,
                    "reason": request.reason,
                }
                await audit_bracket(uow.session, actor, "risk.exit.stop_moved", bracket, details, now)
            await self.writer.persist(uow.session, bracket, Step(current, tuple(decisions)), now)
            self.context.wake_after_commit(uow)
        return current


def _check_direction(bracket: Bracket, request: MoveStopRequest, may_loosen: bool) -> None:
    previous = bracket.levels.stop_loss
    if previous is None or request.stop_loss is None or request.stop_loss >= previous:
        return
    if not request.allow_unfavourable:
        raise UnfavourableStopMove(
            "stop_loss: lowering the stop of a long needs allow_unfavourable=true",
            details={"field": "allow_unfavourable"},
        )
    if not may_loosen:
        raise StopLooseningForbidden("lowering the stop of a long needs the risk role", details={"field": "stop_loss"})
