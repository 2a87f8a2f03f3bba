"""Whether an account's hedge overrides wait for a director, from the approval policy the hitl service mirrors
to Redis (`hitl:policy:account:<account_id>`, value `ApprovalPolicyValue`).

Key absent: the account has no hitl policy and overrides apply at once, as before. Key present: its
`hedge_override` rule decides. Redis unreachable or a value that breaks the contract is a 503, never "no policy".
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.hedge.errors import ApprovalPolicyUnavailable
from shared.contracts.approvals import ApprovalPolicyValue
from shared.contracts.base import ContractViolation
from shared.contracts.mirror import decode_mirror
from shared.mirror_keys import approval_policy_key


def override_subject_id(account_id: str, pending_id: int) -> str:
    """The approval request's subject id of one pending override (its override history row)."""
    return f"hedge-override:{account_id}:{pending_id}"


def parse_subject_id(subject_id: str) -> tuple[str, int] | None:
    """(account_id, pending history row id) of a subject id made by `override_subject_id`, else None."""
    prefix, _, rest = subject_id.partition(":")
    account_id, _, row_id = rest.rpartition(":")
    if prefix != "hedge-override" or not account_id or not row_id.isdigit():
        return None
    return account_id, int(row_id)


class OverrideApprovalPolicy:
    """Reads the hedge_override rule of an account's hitl policy."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def needs_approval(self, account_id: str) -> bool:
        """True when the account's hitl policy holds overrides for approval; False without a policy."""
        try:
            raw = await self.redis.get(approval_policy_key(account_id))
        except RedisError as exc:
            raise ApprovalPolicyUnavailable(f"approval policy unavailable: {type(exc).__name__}") from None
        if raw is None:
            return False
        try:
            policy = decode_mirror(ApprovalPolicyValue, raw)
        except ContractViolation:
            raise ApprovalPolicyUnavailable(f"approval policy of {account_id} is unreadable") from None
        return policy.hedge_override
