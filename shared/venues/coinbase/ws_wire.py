"""Decoders of Coinbase Advanced Trade WebSocket frames: JSON text in, typed messages out, `WsWireError` else.

Every message has `{channel, timestamp, sequence_num, events: [...]}`; `sequence_num` counts every message of the
connection (all channels), so a skipped number means a lost message (docs.cdp.coinbase.com advanced-trade
websocket-overview / websocket-channels). Channels decoded: `l2_data` (the `level2` subscription), `market_trades`,
`heartbeats`, `user`, `subscriptions`; an error frame is `{"type": "error", "message": ...}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from shared.venues.coinbase.wire import CoinbaseWireError, decimal_of, time_of


class WsWireError(ValueError):
    """A frame that does not have the documented shape."""


@dataclass(frozen=True, slots=True)
class L2Update:
    side: str  # bid | offer
    price: Decimal
    quantity: Decimal  # the new size at the level, 0 removes it


@dataclass(frozen=True, slots=True)
class L2Event:
    kind: str  # snapshot | update
    product_id: str
    updates: tuple[L2Update, ...]


@dataclass(frozen=True, slots=True)
class MarketTrade:
    trade_id: str
    product_id: str
    price: Decimal
    size: Decimal
    side: str  # BUY | SELL, the maker's side
    time: datetime


@dataclass(frozen=True, slots=True)
class UserOrder:
    order_id: str
    client_order_id: str
    product_id: str
    status: str


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded message: its channel, its connection sequence number and the decoded events."""

    channel: str
    sequence: int
    l2: tuple[L2Event, ...] = ()
    trades: tuple[MarketTrade, ...] = ()
    orders: tuple[UserOrder, ...] = ()


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    message: str


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WsWireError(f"{where}: expected an object")
    return value


def _str(obj: dict[str, Any], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise WsWireError(f"{where}.{name}: expected a non-empty string")
    return value


def _list(obj: dict[str, Any], name: str, where: str) -> list[Any]:
    value = obj.get(name)
    if not isinstance(value, list):
        raise WsWireError(f"{where}.{name}: expected a list")
    return value


def _dec(obj: dict[str, Any], name: str, where: str) -> Decimal:
    try:
        return decimal_of(obj.get(name), f"{where}.{name}")
    except CoinbaseWireError as exc:
        raise WsWireError(str(exc)) from None


def _l2(event: dict[str, Any], where: str) -> L2Event:
    kind = _str(event, "type", where)
    if kind not in ("snapshot", "update"):
        raise WsWireError(f"{where}.type: expected snapshot or update")
    updates = []
    for i, raw in enumerate(_list(event, "updates", where)):
        item = _obj(raw, f"{where}.updates[{i}]")
        side = _str(item, "side", f"{where}.updates[{i}]")
        if side not in ("bid", "offer"):
            raise WsWireError(f"{where}.updates[{i}].side: expected bid or offer")
        price = _dec(item, "price_level", f"{where}.updates[{i}]")
        quantity = _dec(item, "new_quantity", f"{where}.updates[{i}]")
        if price <= 0 or quantity < 0:
            raise WsWireError(f"{where}.updates[{i}]: a level needs a positive price and a non-negative quantity")
        updates.append(L2Update(side, price, quantity))
    return L2Event(kind, _str(event, "product_id", where), tuple(updates))


def _trade(raw: Any, where: str) -> MarketTrade:
    item = _obj(raw, where)
    side = _str(item, "side", where)
    if side not in ("BUY", "SELL"):
        raise WsWireError(f"{where}.side: expected BUY or SELL")
    price, size = _dec(item, "price", where), _dec(item, "size", where)
    if price <= 0 or size <= 0:
        raise WsWireError(f"{where}: price and size must be positive")
    try:
        stamp = time_of(item.get("time"), f"{where}.time")
    except CoinbaseWireError as exc:
        raise WsWireError(str(exc)) from None
    return MarketTrade(_str(item, "trade_id", where), _str(item, "product_id", where), price, size, side, stamp)


def _order(raw: Any, where: str) -> UserOrder:
    item = _obj(raw, where)
    return UserOrder(
        _str(item, "order_id", where),
        _str(item, "client_order_id", where),
        _str(item, "product_id", where),
        _str(item, "status", where),
    )


def decode_frame(text: str | bytes) -> Frame | ErrorFrame:
    """One WebSocket frame, decoded; `WsWireError` naming the field for anything malformed."""
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise WsWireError("the frame is not JSON") from None
    obj = _obj(message, "frame")
    if obj.get("type") == "error":
        detail = obj.get("message")
        return ErrorFrame(detail if isinstance(detail, str) else "error")
    channel = _str(obj, "channel", "frame")
    sequence = obj.get("sequence_num")
    if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 0:
        raise WsWireError("frame.sequence_num: expected a non-negative integer")
    events = [_obj(e, f"frame.events[{i}]") for i, e in enumerate(_list(obj, "events", "frame"))]
    if channel == "l2_data":
        return Frame(channel, sequence, l2=tuple(_l2(e, f"frame.events[{i}]") for i, e in enumerate(events)))
    if channel == "market_trades":
        trades = tuple(
            _trade(t, f"frame.events[{i}].trades[{j}]")
            for i, e in enumerate(events)
            for j, t in enumerate(_list(e, "trades", f"frame.events[{i}]"))
        )
        return Frame(channel, sequence, trades=trades)
    if channel == "user":
        orders = tuple(
            _order(o, f"frame.events[{i}].orders[{j}]")
            for i, e in enumerate(events)
            for j, o in enumerate(_list(e, "orders", f"frame.events[{i}]"))
        )
        return Frame(channel, sequence, orders=orders)
    return Frame(channel, sequence)  # heartbeats, subscriptions and channels not decoded further
