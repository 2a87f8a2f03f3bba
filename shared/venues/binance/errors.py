"""Binance's error codes and what each means to the platform (developers.binance.com/docs/binance-spot-api-docs/errors).

Errors come as an HTTP 4xx/5xx with `{"code": -2010, "msg": "..."}`. -2010 (NEW_ORDER_REJECTED) carries the reason
in `msg` only ("Account has insufficient balance for requested action.", "Order would immediately match and
take.", "Duplicate order sent."), so the refusal code is chosen by code, then by message.
"""

from __future__ import annotations

from enum import StrEnum

UNKNOWN = -1000
DISCONNECTED = -1001
TOO_MANY_REQUESTS = -1003
BACKEND_TIMEOUT = -1007  # "Timeout waiting for response from backend server. Send status unknown"
SERVER_BUSY = -1008
TOO_MANY_ORDERS = -1015
INVALID_TIMESTAMP = -1021
INVALID_SIGNATURE = -1022
ILLEGAL_CHARS = -1100
MANDATORY_PARAM_EMPTY = -1102
BAD_SYMBOL = -1121
FILTER_FAILURE = -1013
NEW_ORDER_REJECTED = -2010
CANCEL_REJECTED = -2011
NO_SUCH_ORDER = -2013
BAD_API_KEY_FMT = -2014
REJECTED_MBX_KEY = -2015

MSG_INSUFFICIENT = "Account has insufficient balance for requested action."
MSG_WOULD_TAKE = "Order would immediately match and take."
MSG_DUPLICATE = "Duplicate order sent."
MSG_UNKNOWN_ORDER = "Unknown order sent."
MSG_NO_SUCH_ORDER = "Order does not exist."
MSG_TOO_MANY_REQUESTS = "Too many requests; current limit is %s requests per minute."
MSG_TIMESTAMP = "Timestamp for this request is outside of the recvWindow."
MSG_SIGNATURE = "Signature for this request is not valid."
MSG_API_KEY = "Invalid API-key, IP, or permissions for action."
MSG_BAD_SYMBOL = "Invalid symbol."


class ErrorKind(StrEnum):
    REJECTED = "rejected"  # definitive: nothing was done
    RATE_LIMITED = "rate_limited"  # nothing was done; wait the venue's Retry-After and try again
    TIMESTAMP = "timestamp"  # nothing was done; resynchronise the server time and try again
    UNAVAILABLE = "unavailable"  # the venue may or may not have acted
    OPERATIONAL = "operational"  # our key is unusable: stop and page
    DUPLICATE = "duplicate"  # an open order already has this newClientOrderId


_KINDS: dict[int, ErrorKind] = {
    TOO_MANY_REQUESTS: ErrorKind.RATE_LIMITED,
    TOO_MANY_ORDERS: ErrorKind.RATE_LIMITED,
    INVALID_TIMESTAMP: ErrorKind.TIMESTAMP,
    UNKNOWN: ErrorKind.UNAVAILABLE,
    DISCONNECTED: ErrorKind.UNAVAILABLE,
    BACKEND_TIMEOUT: ErrorKind.UNAVAILABLE,
    SERVER_BUSY: ErrorKind.UNAVAILABLE,
    INVALID_SIGNATURE: ErrorKind.OPERATIONAL,
    BAD_API_KEY_FMT: ErrorKind.OPERATIONAL,
    REJECTED_MBX_KEY: ErrorKind.OPERATIONAL,
}

_CODES: dict[int, str] = {
    BAD_SYMBOL: "unknown_instrument",
    FILTER_FAILURE: "invalid_quantity",
    ILLEGAL_CHARS: "invalid_order",
    MANDATORY_PARAM_EMPTY: "invalid_order",
    CANCEL_REJECTED: "unknown_order",
    NO_SUCH_ORDER: "unknown_order",
    TOO_MANY_REQUESTS: "rate_limited",
    TOO_MANY_ORDERS: "rate_limited",
    INVALID_TIMESTAMP: "invalid_timestamp",
}
_MESSAGES: dict[str, str] = {
    MSG_INSUFFICIENT: "insufficient_funds",
    MSG_WOULD_TAKE: "post_only_would_cross",
}


def error_kind(code: int, msg: str) -> ErrorKind:
    """What an error means; an unknown code is a definitive refusal (Binance answered)."""
    if code == NEW_ORDER_REJECTED and msg == MSG_DUPLICATE:
        return ErrorKind.DUPLICATE
    return _KINDS.get(code, ErrorKind.REJECTED)


def rejection_code(code: int, msg: str) -> str:
    """The platform's refusal code (`venue_rejected` when it has none of its own)."""
    if code == NEW_ORDER_REJECTED:
        return _MESSAGES.get(msg, "venue_rejected")
    return _CODES.get(code, "venue_rejected")
