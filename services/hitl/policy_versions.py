"""Use case: the accounts' approval policies (versions are never overwritten; each change is audited)."""

from __future__ import annotations

from functools import partial

from services.hitl.mirror import PolicyMirror
from services.hitl.policy import PolicyRules
from services.hitl.repository import HitlRepository, StoredPolicy
from services.hitl.service import HitlContext, audit_chain
from shared.audit.log import append as audit_append


class PolicyVersions:
    """Read and store approval policy versions; a stored version is mirrored to Redis for the OMS."""

    def __init__(self, context: HitlContext, mirror: PolicyMirror | None = None) -> None:
        self.context = context
        self.mirror = mirror  # None: not mirrored

    async def current(self, account_id: str) -> StoredPolicy | None:
        """The current policy version of `account_id` (None: none stored, the defaults apply)."""
        async with self.context.uow() as uow:
            return await HitlRepository(uow.session).current_policy(account_id)

    async def put(self, account_id: str, rules: PolicyRules, actor: str) -> StoredPolicy:
        """Store a new version of the account's policy, audited, then mirror it to Redis (a failed write is
        retried by the mirror loop; the stored version stands)."""
        async with self.context.uow() as uow:
            if self.mirror is not None:
                uow.after_commit(partial(_mirror_after_commit, self.mirror, account_id))
            repo = HitlRepository(uow.session)
            await repo.lock_policy_versions(account_id)
            current = await repo.current_policy(account_id)
            policy = StoredPolicy(
                account_id=account_id,
                version=1 if current is None else current.version + 1,
                rules=rules.model_dump(mode="json"),
                created_by=actor,
                created_at=self.context.clock(),
            )
            await repo.insert_policy(policy)
            await audit_append(
                uow.session,
                actor=actor,
                action="hitl.policy_changed",
                target=account_id,
                details={
                    "version": policy.version,
                    "rules": policy.rules,
                    "previous": None if current is None else current.rules,
                },
                chain=audit_chain(account_id),
                occurred_at=policy.created_at,
            )
        return policy


async def _mirror_after_commit(mirror: PolicyMirror, account_id: str) -> None:
    await mirror.mirror_account(account_id)  # a failure is logged and retried by the mirror loop
