"""Per-account hedge policies: versioned, audited with the previous version, the service default as version 0."""

from __future__ import annotations

from typing import Any

from services.hedge.errors import InvalidPolicy
from services.hedge.repository import HedgeRepository
from services.hedge.schemas import PolicyRead, PolicyWrite
from services.hedge.use_cases.common import HedgeContext
from services.hedge.use_cases.evaluation import Evaluation
from shared.audit.log import append as audit_append
from shared.domain.hedge import HedgePolicyError


class Policies:
    """Reads and writes the account's policy; a new version evaluates the account again at once."""

    def __init__(self, context: HedgeContext, evaluation: Evaluation) -> None:
        self.context = context
        self.evaluation = evaluation

    async def set_policy(self, account_id: str, body: PolicyWrite, actor: str) -> PolicyRead:
        """A new version of the account's policy (audited with the previous version), then a re-evaluation."""
        now = self.context.clock()
        try:
            body.policy(self.context.default_policy.ewma_lambda)
        except HedgePolicyError as exc:
            raise InvalidPolicy(str(exc), details={"field": exc.field}) from None
        fields = body.model_dump(mode="json", exclude={"reason"})
        async with self.context.writing() as uow:
            repo = HedgeRepository(uow.session)
            await repo.ensure_account(account_id)
            await repo.lock_account(account_id)
            previous = await repo.policy(account_id)
            version = 1 if previous is None else previous["version"] + 1
            await repo.add_policy(account_id, version, policy=fields, reason=body.reason, set_by=actor, set_at=now)
            await audit_append(
                uow.session,
                actor=actor,
                action="hedge.policy_set",
                target=account_id,
                details={
                    "version": version,
                    "policy": fields,
                    "reason": body.reason,
                    "previous": None if previous is None else previous["policy"],
                },
                chain=f"hedge:{account_id}",
                occurred_at=now,
            )
            await self.evaluation.evaluate(uow.session, account_id)
        return await self.get_policy(account_id)

    async def get_policy(self, account_id: str) -> PolicyRead:
        """The account's policy in force: its newest version, or the service default (version 0)."""
        async with self.context.reading() as uow:
            row = await HedgeRepository(uow.session).policy(account_id)
        if row is not None:
            return PolicyRead(
                **row["policy"],
                account_id=account_id,
                version=row["version"],
                reason=row["reason"],
                set_by=row["set_by"],
                set_at=row["set_at"],
            )
        return PolicyRead(**self._defaults(), account_id=account_id, version=0, reason=None, set_by=None, set_at=None)

    def _defaults(self) -> dict[str, Any]:
        settings = self.context.settings
        return {
            "vol_weight": settings.vol_weight,
            "drawdown_weight": settings.drawdown_weight,
            "vol_saturation": settings.vol_saturation,
            "drawdown_saturation": settings.drawdown_saturation,
            "floor": settings.target_floor,
            "cap": settings.target_cap,
            "band": settings.rebalance_band,
            "pause_drawdown": settings.pause_drawdown,
            "reduce_only_drawdown": settings.reduce_only_drawdown,
            "flatten_drawdown": settings.flatten_drawdown,
            "rearm_hysteresis": settings.rearm_hysteresis,
        }
