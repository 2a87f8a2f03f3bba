"""Operator overrides of the target hedge fraction: set and clear with history and audit, or, when the account's
hitl policy says so, held pending a director's `ApprovalDecided`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.hedge.approval import (
    OverrideApprovalPolicy,
    override_subject_id,
    parse_subject_id,
)
from services.hedge.errors import InvalidOverride, NoActiveOverride
from services.hedge.repository import PENDING_APPROVAL, HedgeRepository
from services.hedge.schemas import HedgeStatus, OverrideClear, OverrideSet
from services.hedge.use_cases.common import HedgeContext, jsonable
from services.hedge.use_cases.evaluation import Evaluation
from services.hedge.use_cases.queries import Queries
from shared.audit.log import append as audit_append
from shared.contracts.approvals import (
    ApprovalDecided,
    ApprovalDecision,
    HedgeOverrideApprovalRequested,
    SubjectType,
)
from shared.contracts.registry import parse_as
from shared.events import Envelope
from shared.observability.logging import get_logger

log = get_logger(__name__)


class Overrides:
    """Sets, clears and settles overrides; each change evaluates the account again at once."""

    def __init__(
        self,
        context: HedgeContext,
        evaluation: Evaluation,
        queries: Queries,
        approvals: OverrideApprovalPolicy | None = None,
    ) -> None:
        self.context = context
        self.evaluation = evaluation
        self.queries = queries
        self.approvals = approvals  # None: overrides never wait for approval

    async def request_override(
        self, account_id: str, body: OverrideSet, actor: str, requester: str
    ) -> tuple[HedgeStatus, bool]:
        """Set the override at once, or, when the account's hitl policy says so, store it pending approval and
        ask the approval service (`requester` becomes the request's requested_by). Returns (status, pending)."""
        _check_expiry(body, self.context.clock())
        if self.approvals is None or not await self.approvals.needs_approval(account_id):
            return await self.set_override(account_id, body, actor), False
        now = self.context.clock()
        async with self.context.writing() as uow:
            repo = HedgeRepository(uow.session)
            await repo.ensure_account(account_id)
            await repo.lock_account(account_id)
            previous = await repo.override(account_id)
            row_id = await self._history(uow.session, account_id, PENDING_APPROVAL, body, previous, actor, now)
            message = HedgeOverrideApprovalRequested(
                subject_type=SubjectType.HEDGE_OVERRIDE,
                subject_id=override_subject_id(account_id, row_id),
                account_id=account_id,
                requested_by=requester,
                target_fraction=body.target_fraction,
                reason=body.reason,
                expires_at=body.expires_at,
                previous_fraction=None if previous is None else previous["target_fraction"],
                requested_at=now,
            )
            await self.context.emit(uow.session, self.context.settings.target_topic, message, account_id=account_id)
        return await self.queries.status(account_id), True

    async def set_override(self, account_id: str, body: OverrideSet, actor: str) -> HedgeStatus:
        """Fix the account's target until `expires_at`; history row and audit entry in the same transaction."""
        now = self.context.clock()
        _check_expiry(body, now)
        async with self.context.writing() as uow:
            repo = HedgeRepository(uow.session)
            await repo.ensure_account(account_id)
            await repo.lock_account(account_id)
            previous = await repo.override(account_id, lock=True)
            await repo.save_override(
                account_id,
                target_fraction=body.target_fraction,
                reason=body.reason,
                expires_at=body.expires_at,
                set_by=actor,
                set_at=now,
            )
            await self._history(uow.session, account_id, "set", body, previous, actor, now)
            await self.evaluation.evaluate(uow.session, account_id)
        return await self.queries.status(account_id)

    async def clear_override(self, account_id: str, body: OverrideClear, actor: str) -> HedgeStatus:
        """Remove the account's override (404 when there is none); history and audit as for setting one."""
        now = self.context.clock()
        async with self.context.writing() as uow:
            repo = HedgeRepository(uow.session)
            await repo.lock_account(account_id)
            previous = await repo.override(account_id, lock=True)
            if previous is None:
                raise NoActiveOverride(f"account {account_id} has no override")
            await repo.delete_override(account_id)
            await self._history(uow.session, account_id, "clear", body, previous, actor, now)
            await self.evaluation.evaluate(uow.session, account_id)
        return await self.queries.status(account_id)

    async def on_decision(self, session: AsyncSession, envelope: Envelope) -> None:
        """An `ApprovalDecided` for a pending override: approved makes it the override in force, rejected or
        expired drops it; history row and audit entry either way (other subjects are ignored). A decision that
        breaks the contract (an unknown decision value) raises ContractViolation: dead-lettered, never a denial."""
        decided = parse_as(ApprovalDecided, envelope)
        if decided.subject_type != SubjectType.HEDGE_OVERRIDE:
            return
        parsed = parse_subject_id(decided.subject_id)
        if parsed is None:
            log.warning("hedge_decision_skipped", subject_id=decided.subject_id[:200], decision=decided.decision.value)
            return
        account_id, row_id = parsed
        repo = HedgeRepository(session)
        await repo.lock_account(account_id)
        pending = await repo.resolve_pending(account_id, row_id)
        if pending is None:
            log.warning("hedge_decision_not_pending", account_id=account_id, row_id=row_id, decision=decided.decision)
            return
        now = self.context.clock()
        decision = decided.decision
        actor = "hitl:" + (",".join(decided.approvers) if decided.approvers else decision.value)
        match decision:
            case ApprovalDecision.APPROVED:
                reason = pending["reason"]
            case ApprovalDecision.REJECTED | ApprovalDecision.EXPIRED:
                reason = f"{decision.value}: {decided.reason or decision.value}"
        body = OverrideSet.model_construct(
            target_fraction=pending["target_fraction"], reason=reason, expires_at=pending["expires_at"]
        )
        previous = await repo.override(account_id, lock=True)
        if decision is ApprovalDecision.APPROVED:
            await repo.save_override(
                account_id,
                target_fraction=pending["target_fraction"],
                reason=pending["reason"],
                expires_at=pending["expires_at"],
                set_by=pending["actor"],
                set_at=now,
            )
        await self._history(session, account_id, decision.value, body, previous, actor, now)
        await self.evaluation.evaluate(session, account_id)

    async def _history(
        self,
        session: AsyncSession,
        account_id: str,
        action: str,
        body: OverrideSet | OverrideClear,
        previous: RowMapping | None,
        actor: str,
        now: datetime,
    ) -> int:
        values: dict[str, Any] = {
            "action": action,
            "target_fraction": body.target_fraction if isinstance(body, OverrideSet) else None,
            "expires_at": body.expires_at if isinstance(body, OverrideSet) else None,
            "previous_fraction": previous["target_fraction"] if previous else None,
            "previous_expires_at": previous["expires_at"] if previous else None,
            "reason": body.reason,
            "actor": actor,
            "occurred_at": now,
        }
        row_id = await HedgeRepository(session).add_override_history(account_id, **values)
        details = {key: jsonable(value) for key, value in values.items() if key not in {"actor", "occurred_at"}}
        await audit_append(
            session,
            actor=actor,
            action=f"hedge.override_{action}",
            target=account_id,
            details=details,
            chain=f"hedge:{account_id}",
            occurred_at=now,
        )
        return row_id


def _check_expiry(body: OverrideSet, now: datetime) -> None:
    if body.expires_at <= now:
        raise InvalidOverride("expires_at: must lie in the future", details={"field": "expires_at"})
