"""A Kraken WebSocket v2 private endpoint (`wss://ws-auth.kraken.com/v2`) on loopback: the `executions` channel.

It serves the accounts of a `KrakenRestFake`: a `subscribe` to `executions` must carry a token the REST fake issued
with `GetWebSocketsToken` and that has not expired (else the subscription is refused, as Kraken refuses it); the
snapshot lists the account's open orders (`snap_orders`) and its last 50 fills (`snap_trades`); then every fill and
order state change of the REST fake's matching engine (`PaperVenue` updates) reaches the account's subscribers as
an `executions` update shaped like https://docs.kraken.com/api/docs/websocket-v2/executions (`exec_type` trade /
new / filled / canceled / expired, `exec_id`, `trade_id`, `last_qty`, `last_price`, `liquidity_ind`, `fees`,
`cl_ord_id`). A `heartbeat` every `heartbeat_s`. Faults on demand: drop every connection, refuse connections (down),
send the next execution twice, send a malformed frame, expire every token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from shared.domain.types import AccountId
from shared.venues.base import VenueFill, VenueOrder, VenueOrderStatus, VenueUpdate
from tests.fakes.kraken_rest import KrakenRestFake

INVALID_TOKEN = "ESession:Invalid session"  # what the fake answers for an unknown or expired token
_EXEC_TYPES = {
    VenueOrderStatus.OPEN: "new",
    VenueOrderStatus.FILLED: "filled",
    VenueOrderStatus.CANCELED: "canceled",
    VenueOrderStatus.EXPIRED: "expired",
    VenueOrderStatus.REJECTED: "canceled",
}


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _num(value: Decimal) -> str:
    return format(value.normalize(), "f")


def fill_execution(fill: VenueFill, status: str = "partially_filled") -> dict[str, Any]:
    """A `trade` execution as Kraken sends it for one of the account's fills."""
    return {
        "exec_type": "trade",
        "order_id": fill.venue_order_id,
        "cl_ord_id": fill.client_order_id,
        "order_userref": 0,
        "symbol": fill.symbol,
        "side": fill.side.value,
        "order_status": status,
        "exec_id": fill.trade_id,
        "trade_id": fill.sequence,
        "last_qty": _num(fill.quantity),
        "last_price": _num(fill.price),
        "cost": _num(fill.quantity * fill.price),
        "liquidity_ind": "m" if fill.liquidity.value == "maker" else "t",
        "fees": [{"asset": fill.fee_asset, "qty": _num(fill.fee)}],
        "fee_usd_equiv": _num(fill.fee),
        "timestamp": _stamp(fill.filled_at),
    }


def order_execution(order: VenueOrder) -> dict[str, Any]:
    """An order event (new / filled / canceled / expired) as Kraken sends it."""
    exec_type = _EXEC_TYPES[order.status]
    return {
        "exec_type": exec_type,
        "order_id": order.venue_order_id,
        "cl_ord_id": order.client_order_id,
        "order_userref": 0,
        "symbol": order.symbol,
        "side": order.side.value,
        "order_type": order.type.value,
        "order_qty": _num(order.quantity),
        "cum_qty": _num(order.filled_quantity),
        "order_status": exec_type,
        "time_in_force": "GTC",
        "timestamp": _stamp(order.updated_at),
        **({"reason": order.reason} if order.reason else {}),
    }


@dataclass
class _Subscriber:
    connection: ServerConnection
    account_id: AccountId


class KrakenPrivateWsFake:
    """The private endpoint over `rest`'s accounts, tokens and matching engine (plain ws on 127.0.0.1)."""

    def __init__(self, rest: KrakenRestFake, *, heartbeat_s: float = 1.0) -> None:
        self.rest = rest
        self.heartbeat_s = heartbeat_s
        self.subscribers: list[_Subscriber] = []
        self.connections = 0
        self.refused: list[str] = []  # errors answered to subscriptions
        self.sent_executions = 0
        self.down = False
        self._duplicate_next = False
        self._server: Server | None = None
        self._beat: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        rest.venue.subscribe(self._on_update)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = next(iter(self._server.sockets)).getsockname()[:2]
        return f"ws://{host}:{port}/v2"

    async def __aenter__(self) -> KrakenPrivateWsFake:
        self._server = await serve(self._handle, "127.0.0.1", 0)
        self._beat = asyncio.create_task(self._heartbeat())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # --- faults ----------------------------------------------------------------------------------------

    async def disconnect_all(self) -> None:
        """Close every connection (as a venue restart would)."""
        for subscriber in list(self.subscribers):
            await subscriber.connection.close(1001, "going away")

    async def set_down(self, down: bool) -> None:
        """Down: every connection dropped and new ones closed at once; up again: served as before."""
        self.down = down
        if down:
            await self.disconnect_all()

    def duplicate_next(self) -> None:
        """The next execution update is sent twice."""
        self._duplicate_next = True

    async def send_malformed(self) -> None:
        """A frame that is not a documented message, to every subscriber."""
        await self._broadcast(None, '{"channel":"executions","type":"update","data":[{"exec_type":7}]}')

    async def expire_tokens(self) -> None:
        """Every token expires and every connection drops: a client must fetch a new token to subscribe again."""
        self.rest.expire_ws_tokens()
        await self.disconnect_all()

    # --- protocol --------------------------------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        self.connections += 1
        if self.down:
            await connection.close(1013, "try again later")
            return
        subscriber: _Subscriber | None = None
        try:
            async for raw in connection:
                subscriber = await self._request(connection, raw) or subscriber
        except ConnectionClosed:
            pass
        finally:
            if subscriber is not None and subscriber in self.subscribers:
                self.subscribers.remove(subscriber)

    async def _request(self, connection: ServerConnection, raw: str | bytes) -> _Subscriber | None:
        try:
            request = json.loads(raw)
            method, params, req_id = request["method"], request.get("params", {}), request.get("req_id")
        except (ValueError, KeyError, TypeError):
            await connection.send(json.dumps({"error": "EGeneral:Invalid arguments", "success": False}))
            return None
        if method == "ping":
            await connection.send(json.dumps({"method": "pong", "req_id": req_id}))
            return None
        if method != "subscribe" or params.get("channel") != "executions":
            await connection.send(_ack(method, {}, req_id, error="EGeneral:Invalid arguments"))
            return None
        account_id = self.rest.ws_token_account(str(params.get("token", "")))
        if account_id is None:
            self.refused.append(INVALID_TOKEN)
            await connection.send(_ack(method, {"channel": "executions"}, req_id, error=INVALID_TOKEN))
            return None
        subscriber = _Subscriber(connection, account_id)
        async with self._send_lock:  # the snapshot, then updates: none lost between them
            await connection.send(_ack(method, {"channel": "executions", "snapshot": True}, req_id))
            await connection.send(await self._snapshot(account_id, params))
            self.subscribers.append(subscriber)
        return subscriber

    async def _snapshot(self, account_id: AccountId, params: dict[str, Any]) -> str:
        data: list[dict[str, Any]] = []
        if params.get("snap_orders", True):
            data += [order_execution(o) for o in await self.rest.venue.open_orders(account_id)]
        if params.get("snap_trades", False):
            fills = sorted(await self.rest.venue.fills_since(account_id, 0), key=lambda f: f.sequence)[-50:]
            data += [fill_execution(f) for f in fills]
        return json.dumps({"channel": "executions", "type": "snapshot", "data": data, "sequence": 1})

    async def _on_update(self, update: VenueUpdate) -> None:
        data = fill_execution(update) if isinstance(update, VenueFill) else order_execution(update)
        frame = json.dumps({"channel": "executions", "type": "update", "data": [data]})
        times = 2 if self._duplicate_next else 1
        self._duplicate_next = False
        for _ in range(times):
            self.sent_executions += await self._broadcast(update.account_id, frame)

    async def _broadcast(self, account_id: AccountId | None, frame: str) -> int:
        sent = 0
        async with self._send_lock:
            for subscriber in list(self.subscribers):
                if account_id is None or subscriber.account_id == account_id:
                    with contextlib.suppress(ConnectionClosed):
                        await subscriber.connection.send(frame)
                        sent += 1
        return sent

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await self._broadcast(None, '{"channel":"heartbeat"}')


def _ack(method: str, result: dict[str, Any], req_id: object, error: str = "") -> str:
    now = _stamp(datetime.now(UTC))
    message: dict[str, Any] = {"method": method, "result": result, "success": not error, "time_in": now}
    if error:
        message["error"] = error
    if req_id is not None:
        message["req_id"] = req_id
    return json.dumps(message)
