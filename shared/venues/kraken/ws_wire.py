"""Decoding of Kraken WebSocket v2 frames, public (https://docs.kraken.com/api/docs/websocket-v2/book, .../trade,
.../instrument, .../heartbeat, .../status, .../ping) and private (.../executions): a text frame in, one typed
message out, or `WireError`.

Numbers are parsed as `Decimal` from the frame's own digits (prices and quantities must stay exact for the book
checksum); a quoted decimal string is accepted too. Anything else that is not one of the documented shapes is a
`WireError` naming what is wrong; a well-formed message of a channel this client does not use is `Unknown`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from shared.venues.kraken.book import PairPrecision, WireLevel

__all__ = [
    "BookMessage",
    "ExecutionRecord",
    "ExecutionsMessage",
    "Heartbeat",
    "InstrumentMessage",
    "KrakenMessage",
    "MethodResponse",
    "Status",
    "TradeMessage",
    "TradeRecord",
    "Unknown",
    "WireError",
    "decode_frame",
]

MAX_FRAME_CHARS = 4_000_000
_DECODER = json.JSONDecoder(parse_float=Decimal)  # one decoder: json.loads with options builds one per call


class WireError(ValueError):
    """A frame that is not a documented Kraken v2 message (the reason names the field)."""


@dataclass(frozen=True, slots=True)
class BookMessage:
    """One symbol's `book` snapshot or update."""

    snapshot: bool
    symbol: str
    bids: list[WireLevel]
    asks: list[WireLevel]
    checksum: int | None
    timestamp: datetime | None


@dataclass(frozen=True, slots=True)
class TradeRecord:
    symbol: str
    side: str
    price: Decimal
    qty: Decimal
    ord_type: str
    trade_id: int
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class TradeMessage:
    snapshot: bool
    trades: list[TradeRecord]


@dataclass(frozen=True, slots=True)
class InstrumentMessage:
    """Precisions of the pairs in an `instrument` snapshot or update."""

    pairs: dict[str, PairPrecision]


@dataclass(frozen=True, slots=True)
class MethodResponse:
    """An answer to subscribe / unsubscribe / ping (`pong`)."""

    method: str
    success: bool
    channel: str | None
    symbol: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    pass


@dataclass(frozen=True, slots=True)
class Status:
    system: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """A well-formed message this client does not use (counted, then ignored)."""

    what: str


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    """One event of the private `executions` channel; a `trade` always carries its execution fields."""

    exec_type: str
    order_id: str
    cl_ord_id: str | None
    order_userref: int | None
    symbol: str | None
    side: str | None
    order_type: str | None
    order_qty: Decimal | None
    cum_qty: Decimal | None
    order_status: str | None
    exec_id: str | None
    trade_id: int | None
    last_qty: Decimal | None
    last_price: Decimal | None
    liquidity_ind: str | None
    fees: tuple[tuple[str, Decimal], ...]
    reason: str | None
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class ExecutionsMessage:
    """An `executions` snapshot (open orders, the last trades) or update."""

    snapshot: bool
    executions: list[ExecutionRecord]


KrakenMessage = (
    BookMessage | TradeMessage | InstrumentMessage | ExecutionsMessage | MethodResponse | Heartbeat | Status | Unknown
)


def decode_frame(frame: str | bytes) -> KrakenMessage:
    """The typed message of one text frame; `WireError` for anything malformed."""
    if len(frame) > MAX_FRAME_CHARS:
        raise WireError(f"frame of {len(frame)} characters is over the limit")
    try:
        raw = _DECODER.decode(frame if isinstance(frame, str) else frame.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise WireError(f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(raw, dict):
        raise WireError("frame: not a JSON object")
    if "method" in raw:
        return _method(raw)
    return _channel_message(raw)


def _channel_message(raw: dict[str, Any]) -> KrakenMessage:
    channel = raw.get("channel")
    if not isinstance(channel, str):
        raise WireError("channel: missing or not a string")
    if channel == "heartbeat":
        return Heartbeat()
    kind = raw.get("type")
    if channel == "book":
        snapshot = _kind(kind)
        data = _list(raw.get("data"), "data")
        if len(data) != 1:
            raise WireError("data: a book message carries exactly one symbol")
        return _book(_dict(data[0], "data[0]"), snapshot)
    if channel == "trade":
        snapshot = _kind(kind)
        trades = [_trade(_dict(item, f"data[{i}]"), i) for i, item in enumerate(_list(raw.get("data"), "data"))]
        return TradeMessage(snapshot, trades)
    if channel == "instrument":
        _kind(kind)
        return _instrument(_dict(raw.get("data"), "data"))
    if channel == "executions":
        snapshot = _kind(kind)
        items = _list(raw.get("data"), "data")
        return ExecutionsMessage(snapshot, [_execution(_dict(item, f"data[{i}]"), i) for i, item in enumerate(items)])
    if channel == "status":
        data = _list(raw.get("data"), "data")
        system = _dict(data[0], "data[0]").get("system") if data else None
        return Status(system if isinstance(system, str) else "unknown")
    return Unknown(f"channel {channel[:40]!r}")


def _method(raw: dict[str, Any]) -> MethodResponse:
    method = raw["method"]
    if not isinstance(method, str):
        raise WireError("method: not a string")
    success = raw.get("success", True)
    if not isinstance(success, bool):
        raise WireError("success: not a boolean")
    result = raw.get("result")
    channel = symbol = None
    if isinstance(result, dict):
        channel = result.get("channel") if isinstance(result.get("channel"), str) else None
        symbol = result.get("symbol") if isinstance(result.get("symbol"), str) else None
    error = raw.get("error")
    return MethodResponse(method, success, channel, symbol, error if isinstance(error, str) else None)


def _kind(kind: object) -> bool:
    if kind == "snapshot":
        return True
    if kind == "update":
        return False
    raise WireError(f"type: {str(kind)[:40]!r} is neither snapshot nor update")


def _dict(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WireError(f"{where}: not an object")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise WireError(f"{where}: not a list")
    return value


def _decimal(value: object, where: str) -> Decimal:
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)
    elif isinstance(value, str) and len(value) <= 64:
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise WireError(f"{where}: {value[:40]!r} is not a decimal") from None
    else:
        raise WireError(f"{where}: not a number")
    if not number.is_finite():
        raise WireError(f"{where}: not finite")
    return number


def _symbol(value: object, where: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 32:
        raise WireError(f"{where}: not a symbol")
    return value


def _timestamp(value: object, where: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise WireError(f"{where}: not an RFC 3339 timestamp")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise WireError(f"{where}: not an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise WireError(f"{where}: timestamp without a time zone")
    return moment


def _levels(value: object, where: str) -> list[WireLevel]:
    levels = []
    for i, item in enumerate(_list(value, where)):
        if type(item) is dict:
            price, qty = item.get("price"), item.get("qty")
            if type(price) is Decimal and type(qty) is Decimal and price.is_finite() and qty.is_finite():
                levels.append((price, qty))  # the wire's usual shape, checked without building messages
                continue
        level = _dict(item, f"{where}[{i}]")
        levels.append(
            (_decimal(level.get("price"), f"{where}[{i}].price"), _decimal(level.get("qty"), f"{where}[{i}].qty"))
        )
    return levels


def _book(item: dict[str, Any], snapshot: bool) -> BookMessage:
    checksum = item.get("checksum")
    if checksum is not None and (
        not isinstance(checksum, int) or isinstance(checksum, bool) or not 0 <= checksum < 2**32
    ):
        raise WireError("checksum: not an unsigned 32-bit integer")
    stamp = item.get("timestamp")
    return BookMessage(
        snapshot=snapshot,
        symbol=_symbol(item.get("symbol"), "symbol"),
        bids=_levels(item.get("bids", []), "bids"),
        asks=_levels(item.get("asks", []), "asks"),
        checksum=checksum,
        timestamp=None if stamp is None else _timestamp(stamp, "timestamp"),
    )


def _trade(item: dict[str, Any], i: int) -> TradeRecord:
    side = item.get("side")
    if side not in ("buy", "sell"):
        raise WireError(f"data[{i}].side: not buy or sell")
    ord_type = item.get("ord_type")
    if ord_type not in ("market", "limit"):
        raise WireError(f"data[{i}].ord_type: not market or limit")
    trade_id = item.get("trade_id")
    if not isinstance(trade_id, int) or isinstance(trade_id, bool) or trade_id < 0:
        raise WireError(f"data[{i}].trade_id: not a non-negative integer")
    return TradeRecord(
        symbol=_symbol(item.get("symbol"), f"data[{i}].symbol"),
        side=side,
        price=_decimal(item.get("price"), f"data[{i}].price"),
        qty=_decimal(item.get("qty"), f"data[{i}].qty"),
        ord_type=ord_type,
        trade_id=trade_id,
        timestamp=_timestamp(item.get("timestamp"), f"data[{i}].timestamp"),
    )


def _precision(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 18:
        raise WireError(f"{where}: not a precision between 0 and 18")
    return value


def _instrument(data: dict[str, Any]) -> InstrumentMessage:
    pairs = {}
    for i, item in enumerate(_list(data.get("pairs", []), "data.pairs")):
        pair = _dict(item, f"data.pairs[{i}]")
        pairs[_symbol(pair.get("symbol"), f"data.pairs[{i}].symbol")] = PairPrecision(
            price=_precision(pair.get("price_precision"), f"data.pairs[{i}].price_precision"),
            qty=_precision(pair.get("qty_precision"), f"data.pairs[{i}].qty_precision"),
        )
    return InstrumentMessage(pairs)


_SIDES = ("buy", "sell")
_LIQUIDITY = ("m", "t")


def _optional_text(item: dict[str, Any], name: str, where: str, limit: int = 64) -> str | None:
    value = item.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise WireError(f"{where}.{name}: not a string of at most {limit} characters")
    return value


def _optional_decimal(item: dict[str, Any], name: str, where: str) -> Decimal | None:
    value = item.get(name)
    return None if value is None else _decimal(value, f"{where}.{name}")


def _optional_int(item: dict[str, Any], name: str, where: str) -> int | None:
    value = item.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise WireError(f"{where}.{name}: not a non-negative 64-bit integer")
    return value


def _fees(value: object, where: str) -> tuple[tuple[str, Decimal], ...]:
    if value is None:
        return ()
    fees = []
    for i, item in enumerate(_list(value, where)):
        fee = _dict(item, f"{where}[{i}]")
        asset = _optional_text(fee, "asset", f"{where}[{i}]", 16)
        if not asset:
            raise WireError(f"{where}[{i}].asset: missing")
        qty = _decimal(fee.get("qty"), f"{where}[{i}].qty")
        if qty < 0:
            raise WireError(f"{where}[{i}].qty: negative")
        fees.append((asset, qty))
    return tuple(fees)


def _execution(item: dict[str, Any], i: int) -> ExecutionRecord:
    where = f"data[{i}]"
    exec_type = _optional_text(item, "exec_type", where, 32)
    order_id = _optional_text(item, "order_id", where)
    if not exec_type:
        raise WireError(f"{where}.exec_type: missing")
    if not order_id:
        raise WireError(f"{where}.order_id: missing")
    side = item.get("side")
    if side is not None and side not in _SIDES:
        raise WireError(f"{where}.side: not buy or sell")
    liquidity = item.get("liquidity_ind")
    if liquidity is not None and liquidity not in _LIQUIDITY:
        raise WireError(f"{where}.liquidity_ind: not m or t")
    symbol = item.get("symbol")
    record = ExecutionRecord(
        exec_type=exec_type,
        order_id=order_id,
        cl_ord_id=_optional_text(item, "cl_ord_id", where),
        order_userref=_optional_int(item, "order_userref", where),
        symbol=None if symbol is None else _symbol(symbol, f"{where}.symbol"),
        side=side,
        order_type=_optional_text(item, "order_type", where, 32),
        order_qty=_optional_decimal(item, "order_qty", where),
        cum_qty=_optional_decimal(item, "cum_qty", where),
        order_status=_optional_text(item, "order_status", where, 32),
        exec_id=_optional_text(item, "exec_id", where),
        trade_id=_optional_int(item, "trade_id", where),
        last_qty=_optional_decimal(item, "last_qty", where),
        last_price=_optional_decimal(item, "last_price", where),
        liquidity_ind=liquidity,
        fees=_fees(item.get("fees"), f"{where}.fees"),
        reason=_optional_text(item, "reason", where, 200),
        timestamp=_timestamp(item.get("timestamp"), f"{where}.timestamp"),
    )
    if exec_type == "trade":
        _check_trade(record, where)
    return record


def _check_trade(record: ExecutionRecord, where: str) -> None:
    """A trade event must say what was executed: its id, quantity, price, pair, side and liquidity."""
    for name in ("exec_id", "trade_id", "symbol", "side", "liquidity_ind"):
        if getattr(record, name) is None:
            raise WireError(f"{where}.{name}: missing on a trade")
    if record.last_qty is None or record.last_qty <= 0:
        raise WireError(f"{where}.last_qty: not a positive quantity")
    if record.last_price is None or record.last_price <= 0:
        raise WireError(f"{where}.last_price: not a positive price")
