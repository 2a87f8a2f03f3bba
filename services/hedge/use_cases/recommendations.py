"""Kill-switch recommendations: raised once per level when the drawdown reaches it, re-armed by the hysteresis
or by hand."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.hedge.errors import NothingToRearm
from services.hedge.metrics import RECOMMENDATIONS_RAISED, RECOMMENDATIONS_REARMED
from services.hedge.repository import HedgeRepository
from services.hedge.schemas import RearmRequest, RecommendationRead
from services.hedge.use_cases.common import AUTO_ACTOR, PRODUCER, HedgeContext, text
from shared.audit.log import append as audit_append
from shared.contracts.base import outbox_payload
from shared.contracts.hedge import KillSwitchRecommended, RecommendationRearmed
from shared.domain.hedge import HedgeLevel, HedgePolicy, levels_to_raise, levels_to_rearm, threshold_of
from shared.observability.logging import get_logger

log = get_logger(__name__)


class Recommendations:
    """Raises and re-arms the kill-switch recommendations of an account."""

    def __init__(self, context: HedgeContext) -> None:
        self.context = context

    async def follow_drawdown(
        self, session: AsyncSession, policy: HedgePolicy, account_id: str, dd: Decimal, now: datetime
    ) -> None:
        """Re-arm the levels the drawdown recovered from, raise those it reached (caller's transaction)."""
        active = await HedgeRepository(session).active_recommendations([account_id])
        raised = {HedgeLevel(rec["level"]): rec for rec in active}
        for level in levels_to_rearm(policy, dd, set(raised)):
            reason = f"drawdown {text(dd)} recovered below {text(threshold_of(policy, level))} - hysteresis"
            await self._rearm_one(session, raised[level], AUTO_ACTOR, reason, now)
        for level in levels_to_raise(policy, dd, set(raised)):
            await self._raise(session, account_id, level, threshold_of(policy, level), dd, now)

    async def rearm(self, account_id: str, body: RearmRequest, actor: str) -> list[RecommendationRead]:
        """Re-arm raised recommendations by hand (audited); 409 when none of the asked level is raised."""
        now = self.context.clock()
        async with self.context.writing() as uow:
            repo = HedgeRepository(uow.session)
            await repo.lock_account(account_id)
            active = [
                rec
                for rec in await repo.active_recommendations([account_id])
                if body.level is None or rec["level"] == body.level.value
            ]
            if not active:
                raise NothingToRearm(f"no raised recommendation to re-arm for account {account_id}")
            for rec in active:
                await self._rearm_one(uow.session, rec, actor, body.reason, now)
        return [
            RecommendationRead(**{**rec, "rearmed_at": now, "rearmed_by": actor, "rearm_reason": body.reason})
            for rec in active
        ]

    async def _raise(
        self, session: AsyncSession, account_id: str, level: HedgeLevel, threshold: Decimal, dd: Decimal, now: datetime
    ) -> None:
        recommendation_id = str(uuid.uuid4())
        inserted = await HedgeRepository(session).insert_recommendation(
            recommendation_id=recommendation_id,
            account_id=account_id,
            level=level.value,
            drawdown=dd,
            threshold=threshold,
            raised_at=now,
        )
        if not inserted:
            return
        message = KillSwitchRecommended(
            recommendation_id=recommendation_id,
            account_id=account_id,
            level=level,
            drawdown=dd,
            threshold=threshold,
            raised_at=now,
        )
        await self.context.emit(session, self.context.settings.recommendation_topic, message, account_id=account_id)
        await audit_append(
            session,
            actor=PRODUCER,
            action="hedge.recommendation_raised",
            target=account_id,
            details=outbox_payload(message),
            chain=f"hedge:{account_id}",
            occurred_at=now,
        )
        RECOMMENDATIONS_RAISED.labels(level.value).inc()
        log.warning("kill_switch_recommended", account_id=account_id, level=level.value, drawdown=text(dd))

    async def _rearm_one(
        self, session: AsyncSession, recommendation: RowMapping, actor: str, reason: str, now: datetime
    ) -> None:
        account_id = recommendation["account_id"]
        await HedgeRepository(session).rearm(recommendation["recommendation_id"], now, actor, reason)
        message = RecommendationRearmed(
            recommendation_id=recommendation["recommendation_id"],
            account_id=account_id,
            level=HedgeLevel(recommendation["level"]),
            actor=actor,
            reason=reason,
            rearmed_at=now,
        )
        await self.context.emit(session, self.context.settings.recommendation_topic, message, account_id=account_id)
        RECOMMENDATIONS_REARMED.labels("auto" if actor == AUTO_ACTOR else "manual").inc()
        await audit_append(
            session,
            actor=actor,
            action="hedge.recommendation_rearmed",
            target=account_id,
            details=outbox_payload(message),
            chain=f"hedge:{account_id}",
            occurred_at=now,
        )
