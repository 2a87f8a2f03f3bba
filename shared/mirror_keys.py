"""Redis keys a service mirrors its PostgreSQL truth (or its latest market data) into, for other services' fast path.

The writer and every reader use these functions, so a key is spelled once; the value of each key is one
contract model (`shared/contracts/`), written with `encode_mirror` and read with `decode_mirror`. A missing key
means "nothing configured" (never permission where a rule is enforced), an unreachable Redis is an error, and a
value that breaks its model is a `ContractViolation`, never a default.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pydantic import BaseModel

from shared.contracts.approvals import ApprovalPolicyValue
from shared.contracts.marketdata import LatestBook, Trade


def approval_policy_key(account_id: str) -> str:
    """An account's current approval policy (ApprovalPolicyValue; writer: hitl; readers: hedge, risk)."""
    return f"hitl:policy:account:{account_id}"


def latest_book_key(symbol: str) -> str:
    """The latest top of book of a symbol (LatestBook; writer: the paper feed; reader: oms)."""
    return f"marketdata:book:{symbol}"


def latest_trade_key(symbol: str) -> str:
    """The last public trade of a symbol (Trade; writer: the paper feed)."""
    return f"marketdata:trade:{symbol}"


# Key pattern -> value model, for documentation and the contract walk test.
MIRROR_VALUES: Mapping[str, type[BaseModel]] = MappingProxyType(
    {
        approval_policy_key("{account_id}"): ApprovalPolicyValue,
        latest_book_key("{symbol}"): LatestBook,
        latest_trade_key("{symbol}"): Trade,
    }
)
