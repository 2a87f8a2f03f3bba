"""Use case: the accounts' approval policies (versions are never overwritten; each change is audited).

Making a policy less strict (`policy.weakened_rules`) needs a director with a fresh TOTP proof; an admin token, or
a director without the proof, is refused. When the current policy's quorum is above 1, the change also needs the
approval of other directors: it becomes a `policy_change` request (quorum - 1 approvals besides the proposer's own,
the proposer cannot vote), and the approved request stores the version in the deciding transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.hitl.errors import PolicyWeakeningRefused
from services.hitl.mirror import PolicyMirror, policy_value
from services.hitl.policy import PolicyRules, payload_hash, weakened_rules
from services.hitl.repository import HitlRepository, StoredPolicy, StoredRequest
from services.hitl.requests import OpenRequest
from services.hitl.service import HitlContext, NewRequest, audit_chain, ensure_fresh_otp
from shared.audit.log import append as audit_append
from shared.auth.roles import Role
from shared.auth.tokens import Principal
from shared.contracts.approvals import SubjectType
from shared.contracts.controls import ApprovalPolicySet
from shared.controls import publish_control
from shared.observability.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PolicyProposal:
    """What a PUT asked for: the account, the rules, who proposes them, and how fresh a TOTP proof must be."""

    account_id: str
    rules: PolicyRules
    principal: Principal
    otp_max_age_s: int


@dataclass(frozen=True, slots=True)
class PolicyChangePending:
    """A weakening that waits for other directors: the `policy_change` request opened for it."""

    request: StoredRequest


class PolicyVersions:
    """Read and store approval policy versions; a stored version is mirrored to Redis for the OMS."""

    def __init__(self, context: HitlContext, open_request: OpenRequest, mirror: PolicyMirror | None = None) -> None:
        self.context = context
        self.open_request = open_request
        self.mirror = mirror  # None: not mirrored

    async def current(self, account_id: str) -> StoredPolicy | None:
        """The current policy version of `account_id` (None: none stored, the defaults apply)."""
        async with self.context.uow() as uow:
            return await HitlRepository(uow.session).current_policy(account_id)

    async def put(self, proposal: PolicyProposal) -> StoredPolicy | PolicyChangePending:
        """Store a new version of the account's policy, audited, then mirror it to Redis (a failed write is
        retried by the mirror loop; the stored version stands); a weakening is checked first (module docstring)."""
        account_id, principal = proposal.account_id, proposal.principal
        async with self.context.uow() as uow:
            repo = HitlRepository(uow.session)
            await repo.lock_policy_versions(account_id)
            current = await repo.current_policy(account_id)
            current_rules = PolicyRules() if current is None else PolicyRules.model_validate(current.rules)
            weakened = weakened_rules(current_rules, proposal.rules)
            if weakened:
                self._check_proposer(proposal, weakened)
                if current_rules.quorum > 1:
                    request = await self._request_change(uow.session, proposal, current, weakened)
                    self.context.wake_after_commit(uow)
                    return PolicyChangePending(request)
            if self.mirror is not None:
                uow.after_commit(partial(_mirror_after_commit, self.mirror, account_id))
            rules = proposal.rules.model_dump(mode="json")
            now = self.context.clock()
            return await store_version(
                uow.session, self.context, now, account_id, rules, principal.subject, {"weakened": weakened}
            )

    def _check_proposer(self, proposal: PolicyProposal, weakened: list[str]) -> None:
        if not proposal.principal.has_any_role(Role.DIRECTOR):
            raise PolicyWeakeningRefused(
                f"making the policy less strict ({', '.join(weakened)}) needs a director with a fresh TOTP proof",
                details={"weakened": weakened},
            )
        ensure_fresh_otp(proposal.principal, self.context.clock(), proposal.otp_max_age_s)

    async def _request_change(
        self, session: AsyncSession, proposal: PolicyProposal, current: StoredPolicy | None, weakened: list[str]
    ) -> StoredRequest:
        base_version = 0 if current is None else current.version
        rules = proposal.rules.model_dump(mode="json")
        payload: dict[str, Any] = {
            "account_id": proposal.account_id,
            "base_version": base_version,
            "rules": rules,
            "previous": None if current is None else current.rules,
            "weakened": weakened,
        }
        subject_id = f"policy:{proposal.account_id}:{base_version}:{payload_hash(payload)[:16]}"
        quorum = PolicyRules() if current is None else PolicyRules.model_validate(current.rules)
        new = NewRequest(
            subject_type=SubjectType.POLICY_CHANGE.value,
            subject_id=subject_id,
            account_id=proposal.account_id,
            requested_by=proposal.principal.subject,
            payload=payload,
            source="rest",
            approvals_needed=quorum.quorum - 1,  # the proposer, a director with a fresh TOTP, is the first
        )
        request, _ = await self.open_request.open_in(session, new)
        return request

    async def apply_approved(
        self, session: AsyncSession, request: StoredRequest, approvers: list[str], now: datetime
    ) -> None:
        """An approved `policy_change` request: store its rules as the next version, unless the policy changed
        since the request was opened (then nothing is stored; the proposer proposes again)."""
        payload = request.payload
        repo = HitlRepository(session)
        await repo.lock_policy_versions(request.account_id)
        current = await repo.current_policy(request.account_id)
        version = 0 if current is None else current.version
        if payload.get("base_version") != version or not isinstance(payload.get("rules"), dict):
            log.warning("policy_change_stale", request_id=request.request_id, current_version=version)
            await audit_append(
                session,
                actor="hitl",
                action="hitl.policy_change_stale",
                target=request.account_id,
                details={"request_id": request.request_id, "current_version": version},
                chain=audit_chain(request.account_id),
                occurred_at=now,
            )
            return
        rules = PolicyRules.model_validate(payload["rules"]).model_dump(mode="json")
        context = {"weakened": payload.get("weakened"), "request_id": request.request_id, "approvers": approvers}
        await store_version(session, self.context, now, request.account_id, rules, request.requested_by, context)


async def store_version(
    session: AsyncSession,
    hitl: HitlContext,
    now: datetime,
    account_id: str,
    rules: dict[str, Any],
    actor: str,
    context: dict[str, Any],
) -> StoredPolicy:
    """Insert the next version (the caller holds the account's policy lock), its audit entry, and its record on
    the controls topic for the OMS (in the same transaction)."""
    repo = HitlRepository(session)
    current = await repo.current_policy(account_id)
    policy = StoredPolicy(
        account_id=account_id,
        version=1 if current is None else current.version + 1,
        rules=rules,
        created_by=actor,
        created_at=now,
    )
    await repo.insert_policy(policy)
    await publish_control(
        session,
        hitl.tables,
        hitl.controls_topic,
        ApprovalPolicySet(policy=policy_value(policy)),
        producer="hitl",
        now=now,
    )
    await audit_append(
        session,
        actor=actor,
        action="hitl.policy_changed",
        target=account_id,
        details={
            "version": policy.version,
            "rules": policy.rules,
            "previous": None if current is None else current.rules,
            **context,
        },
        chain=audit_chain(account_id),
        occurred_at=policy.created_at,
    )
    return policy


async def _mirror_after_commit(mirror: PolicyMirror, account_id: str) -> None:
    await mirror.mirror_account(account_id)  # a failure is logged and retried by the mirror loop
