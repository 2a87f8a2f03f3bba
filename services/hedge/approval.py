"""Whether an account's hedge overrides wait for a director, from the approval policy the hitl service mirrors
to Redis (`hitl:policy:account:<account_id>`, services/hitl/mirror.py).

Key absent: the account has no hitl policy and overrides apply at once, as before. Key present: its
`hedge_override` rule decides. Redis unreachable or an unreadable value is a 503, never "no policy".
"""

from __future__ import annotations

import json

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.hedge.errors import ApprovalPolicyUnavailable
from shared.mirror_keys import approval_policy_key

HEDGE_OVERRIDE_SUBJECT = "hedge_override"


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
            value = json.loads(raw)
        except ValueError:
            value = None
        rule = value.get("hedge_override", True) if isinstance(value, dict) and "version" in value else None
        if not isinstance(rule, bool):
            raise ApprovalPolicyUnavailable(f"approval policy of {account_id} is unreadable")
        return rule
