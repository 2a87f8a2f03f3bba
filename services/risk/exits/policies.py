"""Use case: each account's default exits (versioned, audited, published for the OMS).

Each version is published on the compacted controls topic (`ExitPolicySet`, services/risk/controls.py) in the
transaction that stores it: the OMS keeps its own copy and refuses entries without exits when a policy says so.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.risk.exits.repository import ExitRepository, StoredPolicy
from services.risk.exits.service import ExitContext, policy_json
from shared.audit.log import append as audit_append
from shared.contracts.controls import ExitPolicySet
from shared.contracts.risk import ExitPolicyValue
from shared.controls import publish_control
from shared.db import UnitOfWork
from shared.domain.bracket_model import ExitPolicy
from shared.observability.logging import get_logger

log = get_logger(__name__)


class ExitPolicies:
    """Read and replace the accounts' exit policies."""

    def __init__(self, context: ExitContext) -> None:
        self.context = context

    @staticmethod
    async def policy_of(session: AsyncSession, account_id: str) -> StoredPolicy:
        """The account's policy, or the built-in defaults (version 0) when it has none."""
        stored = await ExitRepository(session).policy(account_id)
        return stored or StoredPolicy(account_id, ExitPolicy(), 0, "default", None)

    async def get(self, account_id: str) -> StoredPolicy:
        async with UnitOfWork(self.context.sessionmaker) as uow:
            return await self.policy_of(uow.session, account_id)

    async def put(self, account_id: str, policy: ExitPolicy, actor: str) -> StoredPolicy:
        """Replace the account's exit policy (versioned, audited, published for the OMS in the same transaction)."""
        now = self.context.clock()
        async with UnitOfWork(self.context.sessionmaker) as uow:
            version = await ExitRepository(uow.session).save_policy(account_id, policy, actor, now)
            stored = StoredPolicy(account_id, policy, version, actor, now)
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
        """The policy as the controls topic carries it."""
        return ExitPolicyValue.model_validate({"version": stored.version, **policy_json(stored.policy)})
