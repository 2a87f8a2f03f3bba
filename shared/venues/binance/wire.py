"""Parsers of Binance spot REST answers: JSON in, typed values out, `BinanceWireError` for anything else.

Shapes follow developers.binance.com/docs/binance-spot-api-docs/rest-api (GET /api/v3/time, /exchangeInfo, POST,
GET and DELETE /api/v3/order, /openOrders, /myTrades, /account). Every field the adapter uses is checked here, so
that a malformed answer is a validation error naming the field (RELIABILITY.md S6 fuzzes these).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any


class BinanceWireError(ValueError):
    """A Binance answer that does not have the documented shape."""


ORDER_STATUSES = frozenset(
    {
        "NEW",
        "PENDING_NEW",
        "PARTIALLY_FILLED",
        "FILLED",
        "CANCELED",
        "PENDING_CANCEL",
        "REJECTED",
        "EXPIRED",
        "EXPIRED_IN_MATCH",
    }
)


def decode(content: bytes) -> Any:
    """The JSON of a body (`BinanceWireError` when it is not JSON)."""
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BinanceWireError(f"not JSON: {type(exc).__name__}") from None


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise BinanceWireError(f"{where}: expected an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise BinanceWireError(f"{where}: expected a list")
    return value


def _str(obj: Mapping[str, Any], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise BinanceWireError(f"{where}.{name}: expected a non-empty string")
    return value


def _int(obj: Mapping[str, Any], name: str, where: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BinanceWireError(f"{where}.{name}: expected an integer")
    return value


def _bool(obj: Mapping[str, Any], name: str, where: str) -> bool:
    value = obj.get(name)
    if not isinstance(value, bool):
        raise BinanceWireError(f"{where}.{name}: expected a boolean")
    return value


def _dec(obj: Mapping[str, Any], name: str, where: str) -> Decimal:
    raw = _str(obj, name, where)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise BinanceWireError(f"{where}.{name}: not a decimal string") from None
    if not value.is_finite() or value < 0:
        raise BinanceWireError(f"{where}.{name}: expected a finite non-negative decimal")
    return value


@dataclass(frozen=True, slots=True)
class BinanceError:
    code: int
    msg: str


def error(body: Any) -> BinanceError:
    """`{"code": -2010, "msg": "..."}`."""
    obj = _obj(body, "error")
    msg = obj.get("msg")
    return BinanceError(_int(obj, "code", "error"), msg if isinstance(msg, str) else "")


def server_time(body: Any) -> int:
    """GET /api/v3/time: the server's time in ms."""
    return _int(_obj(body, "time"), "serverTime", "time")


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    symbol: str
    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    min_notional: Decimal
    base_precision: int
    quote_precision: int


def exchange_info(body: Any) -> list[SymbolInfo]:
    """GET /api/v3/exchangeInfo: the TRADING symbols with PRICE_FILTER, LOT_SIZE and NOTIONAL (or MIN_NOTIONAL)."""
    found = []
    for i, raw in enumerate(_list(_obj(body, "exchangeInfo").get("symbols"), "exchangeInfo.symbols")):
        where = f"symbols[{i}]"
        item = _obj(raw, where)
        if item.get("status") != "TRADING":
            continue
        filters = {}
        for j, f in enumerate(_list(item.get("filters"), f"{where}.filters")):
            fobj = _obj(f, f"{where}.filters[{j}]")
            filters[_str(fobj, "filterType", f"{where}.filters[{j}]")] = fobj
        price, lot = filters.get("PRICE_FILTER"), filters.get("LOT_SIZE")
        if price is None or lot is None:
            raise BinanceWireError(f"{where}: PRICE_FILTER and LOT_SIZE are required")
        notional = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL")
        min_notional = _dec(notional, "minNotional", f"{where}.NOTIONAL") if notional is not None else Decimal(0)
        tick, step = _dec(price, "tickSize", f"{where}.PRICE_FILTER"), _dec(lot, "stepSize", f"{where}.LOT_SIZE")
        if tick <= 0 or step <= 0:
            raise BinanceWireError(f"{where}: tickSize and stepSize must be positive")
        found.append(
            SymbolInfo(
                symbol=_str(item, "symbol", where),
                base=_str(item, "baseAsset", where),
                quote=_str(item, "quoteAsset", where),
                tick_size=tick.normalize(),
                step_size=step.normalize(),
                min_qty=_dec(lot, "minQty", f"{where}.LOT_SIZE").normalize(),
                min_notional=min_notional.normalize(),
                base_precision=_precision(item, "baseAssetPrecision", where),
                quote_precision=_precision(item, "quoteAssetPrecision", where),
            )
        )
    return found


def _precision(obj: Mapping[str, Any], name: str, where: str) -> int:
    value = _int(obj, name, where)
    if not 0 <= value <= 18:
        raise BinanceWireError(f"{where}.{name}: expected 0..18")
    return value


@dataclass(frozen=True, slots=True)
class BinanceOrder:
    symbol: str
    order_id: int
    client_order_id: str
    side: str  # BUY | SELL
    type: str
    status: str
    orig_qty: Decimal
    executed_qty: Decimal
    update_time: int  # ms


def order(body: Any) -> BinanceOrder:
    """An order as POST/GET/DELETE /api/v3/order and /openOrders answer it."""
    obj = _obj(body, "order")
    status = _str(obj, "status", "order")
    if status not in ORDER_STATUSES:
        raise BinanceWireError(f"order.status: unknown status {status[:40]!r}")
    side = _str(obj, "side", "order")
    if side not in ("BUY", "SELL"):
        raise BinanceWireError("order.side: expected BUY or SELL")
    stamp = obj.get("updateTime", obj.get("transactTime"))
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        raise BinanceWireError("order.updateTime: expected an integer")
    # DELETE answers the client id it was sent as `origClientOrderId` (its own `clientOrderId` is the cancel's).
    client = obj.get("origClientOrderId") if "origClientOrderId" in obj else obj.get("clientOrderId")
    if not isinstance(client, str) or not client:
        raise BinanceWireError("order.clientOrderId: expected a non-empty string")
    return BinanceOrder(
        symbol=_str(obj, "symbol", "order"),
        order_id=_int(obj, "orderId", "order"),
        client_order_id=client,
        side=side,
        type=_str(obj, "type", "order"),
        status=status,
        orig_qty=_dec(obj, "origQty", "order"),
        executed_qty=_dec(obj, "executedQty", "order"),
        update_time=stamp,
    )


def orders(body: Any) -> list[BinanceOrder]:
    """GET /api/v3/openOrders."""
    return [order(o) for o in _list(body, "openOrders")]


@dataclass(frozen=True, slots=True)
class BinanceTrade:
    symbol: str
    trade_id: int
    order_id: int
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int  # ms
    is_buyer: bool
    is_maker: bool


def trades(body: Any) -> list[BinanceTrade]:
    """GET /api/v3/myTrades."""
    found = []
    for i, raw in enumerate(_list(body, "myTrades")):
        where = f"myTrades[{i}]"
        obj = _obj(raw, where)
        found.append(
            BinanceTrade(
                symbol=_str(obj, "symbol", where),
                trade_id=_int(obj, "id", where),
                order_id=_int(obj, "orderId", where),
                price=_dec(obj, "price", where),
                qty=_dec(obj, "qty", where),
                commission=_dec(obj, "commission", where),
                commission_asset=_str(obj, "commissionAsset", where),
                time=_int(obj, "time", where),
                is_buyer=_bool(obj, "isBuyer", where),
                is_maker=_bool(obj, "isMaker", where),
            )
        )
    return found


def balances(body: Any) -> dict[str, tuple[Decimal, Decimal]]:
    """GET /api/v3/account: asset -> (free, locked)."""
    found = {}
    for i, raw in enumerate(_list(_obj(body, "account").get("balances"), "account.balances")):
        obj = _obj(raw, f"balances[{i}]")
        found[_str(obj, "asset", f"balances[{i}]")] = (
            _dec(obj, "free", f"balances[{i}]"),
            _dec(obj, "locked", f"balances[{i}]"),
        )
    return found


@dataclass(frozen=True, slots=True)
class ExecutionReport:
    """A user data stream `executionReport`: one order's new state and, for x=TRADE, the fill."""

    symbol: str
    client_order_id: str
    side: str
    order_type: str
    execution_type: str
    status: str
    order_id: int
    quantity: Decimal
    filled: Decimal
    last_qty: Decimal
    last_price: Decimal
    commission: Decimal
    commission_asset: str | None
    time: int
    trade_id: int
    maker: bool


def execution_report(event: Any) -> ExecutionReport:
    """An `executionReport` event; a cancel's own id is `c`, the order's is `C` then."""
    obj = _obj(event, "executionReport")
    if obj.get("e") != "executionReport":
        raise BinanceWireError("executionReport.e: expected executionReport")
    status = _str(obj, "X", "executionReport")
    if status not in ORDER_STATUSES:
        raise BinanceWireError(f"executionReport.X: unknown status {status[:40]!r}")
    side = _str(obj, "S", "executionReport")
    if side not in ("BUY", "SELL"):
        raise BinanceWireError("executionReport.S: expected BUY or SELL")
    original = obj.get("C")
    client = original if isinstance(original, str) and original else _str(obj, "c", "executionReport")
    asset = obj.get("N")
    maker = obj.get("m")
    if not isinstance(maker, bool):
        raise BinanceWireError("executionReport.m: expected a boolean")
    return ExecutionReport(
        symbol=_str(obj, "s", "executionReport"),
        client_order_id=client,
        side=side,
        order_type=_str(obj, "o", "executionReport"),
        execution_type=_str(obj, "x", "executionReport"),
        status=status,
        order_id=_int(obj, "i", "executionReport"),
        quantity=_dec(obj, "q", "executionReport"),
        filled=_dec(obj, "z", "executionReport"),
        last_qty=_dec(obj, "l", "executionReport"),
        last_price=_dec(obj, "L", "executionReport"),
        commission=_dec(obj, "n", "executionReport"),
        commission_asset=asset if isinstance(asset, str) and asset else None,
        time=_int(obj, "T", "executionReport"),
        trade_id=_int(obj, "t", "executionReport"),
        maker=maker,
    )


def listen_key(body: Any) -> str:
    """POST /api/v3/userDataStream: `{"listenKey": "..."}`."""
    return _str(_obj(body, "userDataStream"), "listenKey", "userDataStream")
