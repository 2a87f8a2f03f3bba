"""Use case: each account's default exits (versioned, audited) and their Redis mirror.

The OMS reads the mirror (`risk:exit_policy:account:<id>`) to refuse entries without exits when a policy says
so; PostgreSQL stays the source of truth and the clock worker re-writes every policy periodically.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from services.risk.exits.repository import ExitRepository, StoredPolicy
from services.risk.exits.service import ExitContext, policy_json
from shared.audit.log import append as audit_append
from shared.contracts.controls import ExitPolicySet
from shared.contracts.mirror import encode_mirror
from shared.contracts.risk import ExitPolicyValue
from shared.controls import publish_control
from shared.db import UnitOfWork
from shared.domain.bracket_model import ExitPolicy
from shared.mirror_keys import exit_policy_key
from shared.observability.logging import get_logger

log = get_logger(__name__)


class ExitPolicies:
    """Read, replace and mirror the accounts' exit policies."""

    def __init__(self, context: ExitContext, redis: Redis) -> None:
        self.context = context
        self.redis = redis

    @staticmethod
    async def policy_of(session: AsyncSession, account_id: str) -> StoredPolicy:
        """The account's policy, or the built-in defaults (version 0) when it has none."""
        stored = await ExitRepository(session).policy(account_id)
        return stored or StoredPolicy(account_id, ExitPolicy(), 0, "default", None)

    async def get(self, account_id: str) -> StoredPolicy:
        async with UnitOfWork(self.context.sessionmaker) as uow:
            return await self.policy_of(uow.session, account_id)

    async def put(self, account_id: str, policy: ExitPolicy, actor: str) -> StoredPolicy:
        """Replace the account's exit policy (versioned, audited), mirrored to Redis after the commit."""
        now = self.context.clock()
        async with UnitOfWork(self.context.sessionmaker) as uow:
            version = await ExitRepository(uow.session).save_policy(account_id, policy, actor, now)
            stored = StoredPolicy(account_id, policy, version, actor, now)
            uow.after_commit(lambda: self._mirror_quietly(stored))
            self.context.wake_after_commit(uow)
            await publish_control(
                uow.session,
                self.context.tables,
                self.context.settings.risk_controls_topic,
                ExitPolicySet(account_id=account_id, policy=self.value(stored)),
                producer="risk",
                now=now,
            )
            await audit_append(
                uow.session,
                actor=actor,
                action="risk.exit_policy.updated",
                target=account_id,
                details={"version": version, **policy_json(policy)},
                chain=f"risk:{account_id}",
                occurred_at=now,
            )
        return stored

    @staticmethod
    def value(stored: StoredPolicy) -> ExitPolicyValue:
        """The policy as the contracts carry it (the Redis mirror and the controls topic)."""
        return ExitPolicyValue.model_validate({"version": stored.version, **policy_json(stored.policy)})

    async def mirror(self, stored: StoredPolicy) -> None:
        await self.redis.set(exit_policy_key(stored.account_id), encode_mirror(self.value(stored)))

    async def _mirror_quietly(self, stored: StoredPolicy) -> None:
        try:
            await self.mirror(stored)
        except RedisError as exc:  # the periodic mirror writes it again; PostgreSQL stays the source of truth
            log.error("exit_policy_mirror_failed", account_id=stored.account_id, error_type=type(exc).__name__)

    async def mirror_all(self) -> int:
        """Write every stored exit policy to Redis again (Redis holds rebuildable state only)."""
        async with UnitOfWork(self.context.sessionmaker) as uow:
            policies = await ExitRepository(uow.session).all_policies()
        for stored in policies:
            await self.mirror(stored)
        return len(policies)
