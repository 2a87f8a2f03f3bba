"""Coinbase's failure reasons and HTTP errors mapped to the platform's refusal codes and error types."""

from __future__ import annotations

# Create Order `error_response.new_order_failure_reason` / `preview_failure_reason` values (documented enums).
INSUFFICIENT_FUND = "INSUFFICIENT_FUND"
POST_ONLY_WOULD_CROSS = "INVALID_LIMIT_PRICE_POST_ONLY"
BASE_SIZE_TOO_SMALL = "PREVIEW_INVALID_BASE_SIZE_TOO_SMALL"
INVALID_BASE_SIZE = "PREVIEW_INVALID_BASE_SIZE_PRECISION"
INVALID_LIMIT_PRICE = "PREVIEW_INVALID_LIMIT_PRICE_PRECISION"
UNKNOWN_PRODUCT = "UNSUPPORTED_ORDER_CONFIGURATION"
INVALID_PRODUCT_ID = "INVALID_PRODUCT_ID"
UNKNOWN_FAILURE = "UNKNOWN_FAILURE_REASON"
# Cancel Orders `failure_reason`.
UNKNOWN_CANCEL_ORDER = "UNKNOWN_CANCEL_ORDER"
# HTTP error bodies (`{"error": ..., "message": ...}`).
UNAUTHENTICATED = "UNAUTHENTICATED"
PERMISSION_DENIED = "PERMISSION_DENIED"
RATE_LIMITED = "RATE_LIMIT_EXCEEDED"
NOT_FOUND = "NOT_FOUND"
INVALID_ARGUMENT = "INVALID_ARGUMENT"

_CODES = {
    INSUFFICIENT_FUND: "insufficient_funds",
    POST_ONLY_WOULD_CROSS: "post_only_would_cross",
    BASE_SIZE_TOO_SMALL: "invalid_quantity",
    INVALID_BASE_SIZE: "invalid_quantity",
    INVALID_LIMIT_PRICE: "invalid_price",
    INVALID_PRODUCT_ID: "unknown_instrument",
    UNKNOWN_PRODUCT: "invalid_order",
}


def rejection_code(reason: str) -> str:
    """The platform's refusal code for a Coinbase failure reason (`venue:<reason>` for the ones not mapped)."""
    return _CODES.get(reason, f"venue:{reason.lower()[:60]}")
