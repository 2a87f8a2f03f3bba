"""Redis keys a service mirrors its PostgreSQL truth into, for other services' fast path.

The writer and every reader use these functions, so a key is spelled once. Each value is JSON (or a bare
state name for trading state); a missing key means "nothing configured", an unreachable Redis is an error.
"""

from __future__ import annotations

# Trading state (writer: risk; reader: oms). Values: active | reducing | halted.
GLOBAL_TRADING_STATE_KEY = "risk:trading_state:global"


def trading_state_key(account_id: str) -> str:
    """An account's trading state."""
    return f"risk:trading_state:account:{account_id}"


def risk_limits_key(account_id: str) -> str:
    """An account's current pre-trade limits (writer: risk; reader: oms)."""
    return f"risk:limits:account:{account_id}"


def exit_policy_key(account_id: str) -> str:
    """An account's exit policy (writer: risk exits; reader: oms for `require_explicit_exits`)."""
    return f"risk:exit_policy:account:{account_id}"


def approval_policy_key(account_id: str) -> str:
    """An account's current approval policy (writer: hitl; readers: oms, hedge)."""
    return f"hitl:policy:account:{account_id}"
