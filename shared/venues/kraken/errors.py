"""Kraken's error strings and what each means to the platform (docs.kraken.com/api/docs/guides/spot-errors).

Kraken answers HTTP 200 with `{"error": ["EOrder:Insufficient funds"], "result": ...}`; the strings below are the
ones the adapter acts on. Each maps to one of the typed venue errors of `shared.venues.base`.
"""

from __future__ import annotations

from enum import StrEnum

INVALID_NONCE = "EAPI:Invalid nonce"
INVALID_KEY = "EAPI:Invalid key"
INVALID_SIGNATURE = "EAPI:Invalid signature"
PERMISSION_DENIED = "EGeneral:Permission denied"
API_RATE_LIMIT = "EAPI:Rate limit exceeded"
ORDER_RATE_LIMIT = "EOrder:Rate limit exceeded"
TOO_MANY_REQUESTS = "EGeneral:Too many requests"
UNAVAILABLE = "EService:Unavailable"
BUSY = "EService:Busy"
DEADLINE_ELAPSED = "EService:Deadline elapsed"
INTERNAL_ERROR = "EGeneral:Internal error"
INSUFFICIENT_FUNDS = "EOrder:Insufficient funds"
ORDER_MINIMUM = "EOrder:Order minimum not met"
UNKNOWN_ORDER = "EOrder:Unknown order"
INVALID_ARGUMENTS = "EGeneral:Invalid arguments"
UNKNOWN_PAIR = "EQuery:Unknown asset pair"
POST_ONLY = "EOrder:Post only order"
DUPLICATE_CL_ORD_ID = "EOrder:Duplicate order"
CANCEL_ONLY = "EService:Market in cancel_only mode"


class ErrorKind(StrEnum):
    REJECTED = "rejected"  # definitive: nothing was done
    RATE_LIMITED = "rate_limited"  # nothing was done; wait and (reads, cancels) try again
    NONCE = "nonce"  # nothing was done; a fresh nonce may succeed
    UNAVAILABLE = "unavailable"  # the venue may or may not have acted
    OPERATIONAL = "operational"  # our key is unusable: stop and page
    DUPLICATE = "duplicate"  # an open order already has this cl_ord_id


_KINDS: dict[str, ErrorKind] = {
    INVALID_NONCE: ErrorKind.NONCE,
    INVALID_KEY: ErrorKind.OPERATIONAL,
    INVALID_SIGNATURE: ErrorKind.OPERATIONAL,
    PERMISSION_DENIED: ErrorKind.OPERATIONAL,
    API_RATE_LIMIT: ErrorKind.RATE_LIMITED,
    ORDER_RATE_LIMIT: ErrorKind.RATE_LIMITED,
    TOO_MANY_REQUESTS: ErrorKind.RATE_LIMITED,
    UNAVAILABLE: ErrorKind.UNAVAILABLE,
    BUSY: ErrorKind.UNAVAILABLE,
    DEADLINE_ELAPSED: ErrorKind.UNAVAILABLE,
    INTERNAL_ERROR: ErrorKind.UNAVAILABLE,
    DUPLICATE_CL_ORD_ID: ErrorKind.DUPLICATE,
}

# The platform's refusal codes (the contract suite's) for Kraken's definitive refusals.
REJECTION_CODES: dict[str, str] = {
    INSUFFICIENT_FUNDS: "insufficient_funds",
    ORDER_MINIMUM: "invalid_quantity",
    UNKNOWN_ORDER: "unknown_order",
    INVALID_ARGUMENTS: "invalid_order",
    UNKNOWN_PAIR: "unknown_instrument",
    POST_ONLY: "post_only_would_cross",
    CANCEL_ONLY: "market_cancel_only",
    INVALID_NONCE: "invalid_nonce",
    API_RATE_LIMIT: "rate_limited",
    ORDER_RATE_LIMIT: "rate_limited",
    TOO_MANY_REQUESTS: "rate_limited",
}


def _base(error: str) -> str:
    # Kraken may append details after a second colon ("EGeneral:Invalid arguments:volume").
    parts = error.split(":", 2)
    return ":".join(parts[:2])


def error_kind(error: str) -> ErrorKind:
    """What an error string means; an unknown string is a definitive refusal (Kraken answered)."""
    return _KINDS.get(_base(error), ErrorKind.REJECTED)


def rejection_code(error: str) -> str:
    """The platform's refusal code for `error` (`venue_rejected` when it has none of its own)."""
    return REJECTION_CODES.get(_base(error), "venue_rejected")
