"""Parsers of Coinbase Advanced Trade REST answers: JSON in, typed values out, `CoinbaseWireError` for anything else.

Every field the adapter uses is checked here (presence, type, decimal strings), so that a malformed answer is a
validation error naming the field, never a KeyError in the adapter (RELIABILITY.md S6 fuzzes these). Shapes follow
docs.cdp.coinbase.com/api-reference/advanced-trade-api/rest-api (Create Order, Cancel Orders, Get Order, List
Orders, List Fills, List Accounts, List Products).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any


class CoinbaseWireError(ValueError):
    """A Coinbase answer that does not have the documented shape."""


ORDER_STATUSES = frozenset(
    {"PENDING", "OPEN", "FILLED", "CANCELLED", "EXPIRED", "FAILED", "UNKNOWN_ORDER_STATUS", "QUEUED", "CANCEL_QUEUED"}
)


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise CoinbaseWireError(f"{where}: expected an object")
    return value


def _list(obj: Mapping[str, Any], name: str, where: str) -> list[Any]:
    value = obj.get(name)
    if not isinstance(value, list):
        raise CoinbaseWireError(f"{where}.{name}: expected a list")
    return value


def _str(obj: Mapping[str, Any], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise CoinbaseWireError(f"{where}.{name}: expected a non-empty string")
    return value


def _opt_str(obj: Mapping[str, Any], name: str, where: str) -> str | None:
    value = obj.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise CoinbaseWireError(f"{where}.{name}: expected a string")
    return value


def decimal_of(value: Any, where: str) -> Decimal:
    """A finite decimal from a decimal string; `CoinbaseWireError` naming `where` otherwise."""
    if not isinstance(value, str):
        raise CoinbaseWireError(f"{where}: expected a decimal string")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise CoinbaseWireError(f"{where}: not a decimal") from None
    if not number.is_finite():
        raise CoinbaseWireError(f"{where}: not a finite decimal")
    return number


def _dec(obj: Mapping[str, Any], name: str, where: str, default: Decimal | None = None) -> Decimal:
    if default is not None and obj.get(name) in (None, ""):
        return default
    return decimal_of(obj.get(name), f"{where}.{name}")


def time_of(value: Any, where: str) -> datetime:
    """An RFC 3339 time (`2026-03-02T12:00:00.123456Z`, nanoseconds cut to microseconds) with its zone."""
    if not isinstance(value, str):
        raise CoinbaseWireError(f"{where}: expected an RFC 3339 time")
    text = value.replace("Z", "+00:00")
    if "." in text:  # Coinbase sends up to nanoseconds; Python reads up to microseconds
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:digits][:6].ljust(6, '0')}{rest[digits:]}"
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise CoinbaseWireError(f"{where}: not an RFC 3339 time") from None
    if stamp.tzinfo is None:
        raise CoinbaseWireError(f"{where}: a time without a zone")
    return stamp


def body(content: bytes) -> Mapping[str, Any]:
    """The JSON object of an answer."""
    try:
        value = json.loads(content, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        raise CoinbaseWireError("the answer is not JSON") from None
    return _obj(value, "answer")


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """An HTTP error body: `{"error": "...", "message": "...", "error_details": "..."}`."""

    error: str
    message: str


def error_answer(content: bytes) -> ErrorAnswer:
    """The error of a non-2xx answer (an unreadable body reads as UNKNOWN)."""
    try:
        obj = body(content)
    except CoinbaseWireError:
        return ErrorAnswer("UNKNOWN", "unreadable error body")
    error = obj.get("error")
    message = obj.get("message")
    return ErrorAnswer(
        error if isinstance(error, str) and error else "UNKNOWN", message if isinstance(message, str) else ""
    )


@dataclass(frozen=True, slots=True)
class CreateResult:
    """Create Order's answer: the order id when `success`, else the failure reason."""

    success: bool
    order_id: str | None
    error: str | None
    message: str


def create_result(obj: Mapping[str, Any]) -> CreateResult:
    """`{"success": true, "success_response": {"order_id": ...}}` or `{"success": false, "error_response": {...}}`."""
    success = obj.get("success")
    if not isinstance(success, bool):
        raise CoinbaseWireError("create.success: expected a boolean")
    if success:
        ok = _obj(obj.get("success_response"), "create.success_response")
        return CreateResult(True, _str(ok, "order_id", "create.success_response"), None, "")
    err = _obj(obj.get("error_response"), "create.error_response")
    reason = (
        _opt_str(err, "new_order_failure_reason", "create.error_response")
        or _opt_str(err, "preview_failure_reason", "create.error_response")
        or _opt_str(err, "error", "create.error_response")
        or "UNKNOWN_FAILURE_REASON"
    )
    return CreateResult(False, None, reason, _opt_str(err, "message", "create.error_response") or "")


@dataclass(frozen=True, slots=True)
class CancelResult:
    order_id: str
    success: bool
    failure_reason: str | None


def cancel_results(obj: Mapping[str, Any]) -> list[CancelResult]:
    """Cancel Orders' `results`: one per order id asked."""
    out = []
    for i, raw in enumerate(_list(obj, "results", "cancel")):
        item = _obj(raw, f"cancel.results[{i}]")
        success = item.get("success")
        if not isinstance(success, bool):
            raise CoinbaseWireError(f"cancel.results[{i}].success: expected a boolean")
        reason = _opt_str(item, "failure_reason", f"cancel.results[{i}]")
        out.append(CancelResult(_str(item, "order_id", f"cancel.results[{i}]"), success, reason))
    return out


@dataclass(frozen=True, slots=True)
class CoinbaseOrder:
    order_id: str
    client_order_id: str
    product_id: str
    side: str  # BUY | SELL
    status: str
    order_type: str  # MARKET | LIMIT | STOP | STOP_LIMIT
    base_size: Decimal
    filled_size: Decimal
    created_time: datetime
    last_time: datetime
    reject_reason: str | None


def _base_size(configuration: Mapping[str, Any], where: str) -> Decimal:
    if len(configuration) != 1:
        raise CoinbaseWireError(f"{where}.order_configuration: expected exactly one configuration")
    (name, raw), *_ = configuration.items()
    return _dec(_obj(raw, f"{where}.order_configuration.{name}"), "base_size", f"{where}.order_configuration.{name}")


def order(raw: Any, where: str = "order") -> CoinbaseOrder:
    """One order of Get Order / List Orders."""
    obj = _obj(raw, where)
    status = _str(obj, "status", where)
    if status not in ORDER_STATUSES:
        raise CoinbaseWireError(f"{where}.status: unknown status {status[:40]!r}")
    side = _str(obj, "side", where)
    if side not in ("BUY", "SELL"):
        raise CoinbaseWireError(f"{where}.side: expected BUY or SELL")
    created = time_of(obj.get("created_time"), f"{where}.created_time")
    last = obj.get("last_fill_time")
    return CoinbaseOrder(
        order_id=_str(obj, "order_id", where),
        client_order_id=_str(obj, "client_order_id", where),
        product_id=_str(obj, "product_id", where),
        side=side,
        status=status,
        order_type=_str(obj, "order_type", where),
        base_size=_base_size(_obj(obj.get("order_configuration"), f"{where}.order_configuration"), where),
        filled_size=_dec(obj, "filled_size", where, Decimal(0)),
        created_time=created,
        last_time=time_of(last, f"{where}.last_fill_time") if last else created,
        reject_reason=_opt_str(obj, "reject_reason", where),
    )


def get_order(obj: Mapping[str, Any]) -> CoinbaseOrder:
    """Get Order: `{"order": {...}}`."""
    return order(obj.get("order"))


@dataclass(frozen=True, slots=True)
class Page:
    """A page of a cursor-paged list."""

    cursor: str | None
    has_next: bool


def _page(obj: Mapping[str, Any], where: str) -> Page:
    has_next = obj.get("has_next", False)
    if not isinstance(has_next, bool):
        raise CoinbaseWireError(f"{where}.has_next: expected a boolean")
    return Page(_opt_str(obj, "cursor", where), has_next)


def list_orders(obj: Mapping[str, Any]) -> tuple[list[CoinbaseOrder], Page]:
    """List Orders: `{"orders": [...], "has_next": bool, "cursor": "..."}`."""
    found = [order(o, f"orders[{i}]") for i, o in enumerate(_list(obj, "orders", "orders"))]
    return found, _page(obj, "orders")


@dataclass(frozen=True, slots=True)
class CoinbaseFill:
    entry_id: str
    trade_id: str
    order_id: str
    product_id: str
    side: str
    price: Decimal
    size: Decimal
    commission: Decimal
    liquidity: str  # MAKER | TAKER
    trade_time: datetime
    sequence_timestamp: datetime


def fill(raw: Any, where: str = "fill") -> CoinbaseFill:
    """One fill of List Fills."""
    obj = _obj(raw, where)
    liquidity = _str(obj, "liquidity_indicator", where)
    if liquidity not in ("MAKER", "TAKER", "UNKNOWN_LIQUIDITY_INDICATOR"):
        raise CoinbaseWireError(f"{where}.liquidity_indicator: unknown value")
    side = _str(obj, "side", where)
    if side not in ("BUY", "SELL"):
        raise CoinbaseWireError(f"{where}.side: expected BUY or SELL")
    size = _dec(obj, "size", where)
    price = _dec(obj, "price", where)
    if size <= 0 or price <= 0:
        raise CoinbaseWireError(f"{where}: size and price must be positive")
    return CoinbaseFill(
        entry_id=_str(obj, "entry_id", where),
        trade_id=_str(obj, "trade_id", where),
        order_id=_str(obj, "order_id", where),
        product_id=_str(obj, "product_id", where),
        side=side,
        price=price,
        size=size,
        commission=_dec(obj, "commission", where),
        liquidity=liquidity,
        trade_time=time_of(obj.get("trade_time"), f"{where}.trade_time"),
        sequence_timestamp=time_of(obj.get("sequence_timestamp"), f"{where}.sequence_timestamp"),
    )


def list_fills(obj: Mapping[str, Any]) -> tuple[list[CoinbaseFill], str | None]:
    """List Fills: `{"fills": [...], "cursor": "..."}` (an empty cursor: the last page)."""
    found = [fill(f, f"fills[{i}]") for i, f in enumerate(_list(obj, "fills", "fills"))]
    return found, _opt_str(obj, "cursor", "fills")


@dataclass(frozen=True, slots=True)
class CoinbaseAccount:
    currency: str
    available: Decimal
    hold: Decimal


def list_accounts(obj: Mapping[str, Any]) -> tuple[list[CoinbaseAccount], Page]:
    """List Accounts: `available_balance` and `hold` as `{"value": "...", "currency": "..."}`."""
    out = []
    for i, raw in enumerate(_list(obj, "accounts", "accounts")):
        where = f"accounts[{i}]"
        item = _obj(raw, where)
        available = _obj(item.get("available_balance"), f"{where}.available_balance")
        hold = _obj(item.get("hold"), f"{where}.hold")
        out.append(
            CoinbaseAccount(
                _str(item, "currency", where),
                _dec(available, "value", f"{where}.available_balance"),
                _dec(hold, "value", f"{where}.hold"),
            )
        )
    return out, _page(obj, "accounts")


@dataclass(frozen=True, slots=True)
class CoinbaseProduct:
    product_id: str
    base: str
    quote: str
    base_increment: Decimal
    quote_increment: Decimal
    price_increment: Decimal
    base_min_size: Decimal
    quote_min_size: Decimal
    trading_disabled: bool


def list_products(obj: Mapping[str, Any]) -> list[CoinbaseProduct]:
    """List Products: each product's increments and minimums (its instrument precision)."""
    out = []
    for i, raw in enumerate(_list(obj, "products", "products")):
        where = f"products[{i}]"
        item = _obj(raw, where)
        disabled = item.get("trading_disabled", False)
        if not isinstance(disabled, bool):
            raise CoinbaseWireError(f"{where}.trading_disabled: expected a boolean")
        increments = [
            _dec(item, n, where) for n in ("base_increment", "quote_increment", "base_min_size", "quote_min_size")
        ]
        price_increment = _dec(item, "price_increment", where, increments[1])
        if any(v <= 0 for v in (*increments[:2], price_increment)):
            raise CoinbaseWireError(f"{where}: increments must be positive")
        out.append(
            CoinbaseProduct(
                _str(item, "product_id", where),
                _str(item, "base_currency_id", where),
                _str(item, "quote_currency_id", where),
                increments[0],
                increments[1],
                price_increment,
                increments[2],
                increments[3],
                disabled,
            )
        )
    return out
