"""Parsers of Kraken spot REST responses: JSON in, typed values out, `KrakenWireError` for anything else.

Every field the adapter uses is checked here (presence, type, decimal strings), so that a malformed answer is a
validation error naming the field, never a KeyError deep in the adapter (RELIABILITY.md S6 fuzzes these).
Shapes follow the documented examples of docs.kraken.com/api/docs/rest-api (AddOrder, QueryOrders, OpenOrders,
ClosedOrders, TradesHistory, BalanceEx, AssetPairs, Assets, CancelOrder, CancelAllOrdersAfter, GetWebSocketsToken).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any


class KrakenWireError(ValueError):
    """A Kraken answer that does not have the documented shape."""


ORDER_STATUSES = frozenset({"pending", "open", "closed", "canceled", "expired"})


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise KrakenWireError(f"{where}: expected an object")
    return value


def _str(obj: Mapping[str, Any], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise KrakenWireError(f"{where}.{name}: expected a string")
    return value


def _opt_str(obj: Mapping[str, Any], name: str, where: str) -> str | None:
    value = obj.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise KrakenWireError(f"{where}.{name}: expected a string")
    return value


def _dec(obj: Mapping[str, Any], name: str, where: str) -> Decimal:
    value = obj.get(name)
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise KrakenWireError(f"{where}.{name}: expected a decimal string")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise KrakenWireError(f"{where}.{name}: not a decimal") from None
    if not number.is_finite():
        raise KrakenWireError(f"{where}.{name}: not a finite decimal")
    return number


def _time(obj: Mapping[str, Any], name: str, where: str) -> Decimal:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise KrakenWireError(f"{where}.{name}: expected a unix time")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise KrakenWireError(f"{where}.{name}: not a unix time") from None
    if not number.is_finite() or number < 0 or number > Decimal(10**11):
        raise KrakenWireError(f"{where}.{name}: out of range")
    return number


def _int(obj: Mapping[str, Any], name: str, where: str) -> int:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise KrakenWireError(f"{where}.{name}: expected an integer")
    return value


def envelope(body: bytes | str) -> tuple[list[str], Any]:
    """(errors, result) of a Kraken answer `{"error": [...], "result": ...}`."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise KrakenWireError("answer: not JSON") from None
    data = _obj(data, "answer")
    errors = data.get("error", [])
    if not isinstance(errors, list) or not all(isinstance(e, str) for e in errors):
        raise KrakenWireError("answer.error: expected a list of strings")
    if not errors and "result" not in data:
        raise KrakenWireError("answer.result: missing")
    return errors, data.get("result")


@dataclass(frozen=True, slots=True)
class KrakenOrder:
    txid: str
    cl_ord_id: str | None
    status: str
    pair: str
    side: str
    ordertype: str
    volume: Decimal
    volume_exec: Decimal
    price: Decimal  # average fill price (0 when nothing filled)
    limit_price: Decimal
    opentm: Decimal
    closetm: Decimal | None
    reason: str | None
    post_only: bool


def order(txid: str, value: Any) -> KrakenOrder:
    """One order of QueryOrders / OpenOrders / ClosedOrders."""
    where = f"order[{txid}]"
    obj = _obj(value, where)
    status = _str(obj, "status", where)
    if status not in ORDER_STATUSES:
        raise KrakenWireError(f"{where}.status: unknown status")
    descr = _obj(obj.get("descr"), f"{where}.descr")
    side = _str(descr, "type", f"{where}.descr")
    if side not in ("buy", "sell"):
        raise KrakenWireError(f"{where}.descr.type: expected buy or sell")
    closetm = obj.get("closetm")
    return KrakenOrder(
        txid=txid,
        cl_ord_id=_opt_str(obj, "cl_ord_id", where),
        status=status,
        pair=_str(descr, "pair", f"{where}.descr"),
        side=side,
        ordertype=_str(descr, "ordertype", f"{where}.descr"),
        volume=_dec(obj, "vol", where),
        volume_exec=_dec(obj, "vol_exec", where),
        price=_dec(obj, "price", where),
        limit_price=_dec(descr, "price", f"{where}.descr"),
        opentm=_time(obj, "opentm", where),
        closetm=None if closetm in (None, 0) else _time(obj, "closetm", where),
        reason=_opt_str(obj, "reason", where),
        post_only="post" in (_opt_str(obj, "oflags", where) or "").split(","),
    )


def orders(result: Any, key: str | None = None) -> list[KrakenOrder]:
    """The orders of a QueryOrders result (`key` None) or of OpenOrders / ClosedOrders (`key` "open" / "closed")."""
    obj = _obj(result, "result")
    if key is not None:
        obj = _obj(obj.get(key), f"result.{key}")
    return [order(txid, value) for txid, value in obj.items()]


def added_txid(result: Any) -> str:
    """The order id of an AddOrder answer `{"descr": {...}, "txid": ["..."]}`."""
    obj = _obj(result, "result")
    txids = obj.get("txid")
    if not isinstance(txids, list) or len(txids) != 1 or not isinstance(txids[0], str):
        raise KrakenWireError("result.txid: expected one order id")
    return txids[0]


@dataclass(frozen=True, slots=True)
class KrakenTrade:
    txid: str
    ordertxid: str
    pair: str
    time: Decimal
    side: str
    price: Decimal
    cost: Decimal
    fee: Decimal
    volume: Decimal
    trade_id: int
    maker: bool


def trades(result: Any) -> tuple[list[KrakenTrade], int]:
    """(trades, count) of a TradesHistory result."""
    obj = _obj(result, "result")
    count = _int(obj, "count", "result")
    parsed = []
    for txid, value in _obj(obj.get("trades"), "result.trades").items():
        where = f"trade[{txid}]"
        item = _obj(value, where)
        side = _str(item, "type", where)
        if side not in ("buy", "sell"):
            raise KrakenWireError(f"{where}.type: expected buy or sell")
        maker = item.get("maker")
        if not isinstance(maker, bool):
            raise KrakenWireError(f"{where}.maker: expected a boolean")
        parsed.append(
            KrakenTrade(
                txid=txid,
                ordertxid=_str(item, "ordertxid", where),
                pair=_str(item, "pair", where),
                time=_time(item, "time", where),
                side=side,
                price=_dec(item, "price", where),
                cost=_dec(item, "cost", where),
                fee=_dec(item, "fee", where),
                volume=_dec(item, "vol", where),
                trade_id=_int(item, "trade_id", where),
                maker=maker,
            )
        )
    return parsed, count


def balances_ex(result: Any) -> dict[str, tuple[Decimal, Decimal]]:
    """Asset -> (balance, hold_trade) of a BalanceEx result."""
    obj = _obj(result, "result")
    answer = {}
    for asset, value in obj.items():
        item = _obj(value, f"balance[{asset}]")
        hold = _dec(item, "hold_trade", f"balance[{asset}]") if "hold_trade" in item else Decimal(0)
        answer[asset] = (_dec(item, "balance", f"balance[{asset}]"), hold)
    return answer


@dataclass(frozen=True, slots=True)
class KrakenPair:
    name: str
    altname: str
    wsname: str
    base: str
    quote: str
    pair_decimals: int
    lot_decimals: int
    cost_decimals: int
    ordermin: Decimal
    costmin: Decimal
    tick_size: Decimal


def asset_pairs(result: Any) -> list[KrakenPair]:
    """The pairs of an AssetPairs result."""
    parsed = []
    for name, value in _obj(result, "result").items():
        where = f"pair[{name}]"
        item = _obj(value, where)
        parsed.append(
            KrakenPair(
                name=name,
                altname=_str(item, "altname", where),
                wsname=_str(item, "wsname", where),
                base=_str(item, "base", where),
                quote=_str(item, "quote", where),
                pair_decimals=_int(item, "pair_decimals", where),
                lot_decimals=_int(item, "lot_decimals", where),
                cost_decimals=_int(item, "cost_decimals", where),
                ordermin=_dec(item, "ordermin", where),
                costmin=_dec(item, "costmin", where),
                tick_size=_dec(item, "tick_size", where),
            )
        )
    return parsed


def asset_altnames(result: Any) -> dict[str, str]:
    """Kraken asset name -> altname (XXBT -> XBT, ZUSD -> USD) of an Assets result."""
    return {
        name: _str(_obj(v, f"asset[{name}]"), "altname", f"asset[{name}]") for name, v in _obj(result, "result").items()
    }


def cancel_count(result: Any) -> int:
    """How many orders a CancelOrder call cancelled."""
    return _int(_obj(result, "result"), "count", "result")


def trigger_time(result: Any) -> str:
    """The `triggerTime` of a CancelAllOrdersAfter answer ("0" when the switch is off)."""
    return _str(_obj(result, "result"), "triggerTime", "result")


def websockets_token(result: Any) -> tuple[str, int]:
    """(token, expires seconds) of a GetWebSocketsToken answer."""
    obj = _obj(result, "result")
    return _str(obj, "token", "result"), _int(obj, "expires", "result")
