"""The approval policies mirrored to Redis for the OMS's pre-trade fast path (source of truth: `hitl.policies`).

Key `hitl:policy:account:<account_id>`, value the JSON of the account's current policy version (decimals as
strings, plus "account_id", "version", "created_at"). Written after a policy version commits and re-written
from PostgreSQL every `policy_mirror_interval_s` (a Redis that lost its keys would otherwise fall back to the
OMS's own account threshold). Accounts without a stored policy get no key. Redis down: the loop retries and
logs once until it recovers; nothing falls back.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.hitl.repository import HitlRepository, StoredPolicy
from shared.contracts.approvals import ApprovalPolicyValue
from shared.contracts.mirror import encode_mirror
from shared.db import UnitOfWork
from shared.mirror_keys import approval_policy_key
from shared.observability.logging import get_logger

log = get_logger(__name__)


def policy_value(policy: StoredPolicy) -> ApprovalPolicyValue:
    """The mirrored value: the stored rules with the account, version and time."""
    return ApprovalPolicyValue.model_validate(
        {**policy.rules, "account_id": policy.account_id, "version": policy.version, "created_at": policy.created_at}
    )


def policy_json(policy: StoredPolicy) -> str:
    """The Redis text of the account's current version (JSON, sorted keys)."""
    return encode_mirror(policy_value(policy))


class PolicyMirror:
    """Writes current policy versions from PostgreSQL to Redis; one instance per process."""

    def __init__(self, *, sessionmaker: async_sessionmaker[AsyncSession], redis: Redis) -> None:
        self.sessionmaker = sessionmaker
        self.redis = redis
        self.wake = asyncio.Event()  # set after a commit the quick path could not mirror: retry now
        self.mirrored_once = False
        self.failing = False  # logs once per outage, not once per tick

    async def mirror_account(self, account_id: str) -> bool:
        """Re-read the account's committed current version and write it; False (logged once) when Redis failed."""
        try:
            async with UnitOfWork(self.sessionmaker) as uow:
                stored = await HitlRepository(uow.session).current_policy(account_id)
            if stored is not None:
                await self.redis.set(approval_policy_key(account_id), policy_json(stored))
        except (RedisError, SQLAlchemyError, OSError) as exc:
            self._failed(exc)
            self.wake.set()  # the loop retries at once, and then every interval
            return False
        return True

    async def mirror_all(self) -> int:
        """Re-write every account's current version from PG; the number of keys. Raises when Redis fails."""
        async with UnitOfWork(self.sessionmaker) as uow:
            current = await HitlRepository(uow.session).all_current_policies()
        mapping = {approval_policy_key(policy.account_id): policy_json(policy) for policy in current}
        try:
            if mapping:
                await self.redis.mset(mapping)
        except RedisError as exc:
            self._failed(exc)
            raise
        if self.failing:
            log.info("policy_mirror_recovered", keys=len(mapping))
        self.mirrored_once, self.failing = True, False
        return len(mapping)

    def _failed(self, exc: Exception) -> None:
        if not self.failing:
            log.error("policy_mirror_failed", error_type=type(exc).__name__, error=str(exc)[:300])
        self.failing = True
