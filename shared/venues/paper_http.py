"""The paper venue process as a `VenueAdapter`: HTTP calls on httpx, updates from its WebSocket stream.

Transport failures map to the protocol's error types (shared/venues/base.py):
- nothing was sent (connection refused, no connection from the pool in time): `TemporaryError`;
- a write (submit, cancel, deposit) sent and then a timeout, a dropped connection or a 5xx: `AmbiguousOutcome`
  (query by client id; never resubmitted under a new id), except a 503 `temporarily_unavailable`, which the venue
  answers only when it did nothing (`TemporaryError`);
- a read that fails in any of these ways: `TemporaryError` (reading changes nothing; ask again);
- 401/403 (our credentials) or an answer that is not the venue's: `VenueOperationalError`;
- 429: `TemporaryError`; any other 4xx with a code: `VenueRejected(code, message)` (a query's 404
  `order_not_found` is None).

Updates: `follow(stop_event)` keeps a WebSocket to `/v1/stream` open and hands every update to the listeners; after a
drop it reconnects with its fill cursor and the venue replays the fills it may have missed (and their orders'
state). A write's answer carries the stream position of its fills: the adapter returns once its stream has
delivered up to there (or after `timeout_s`), so listeners hear a submit's fills before its answer, as in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any

import httpx
from pydantic import TypeAdapter, ValidationError
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from shared.domain.types import AccountId, Asset, ClientOrderId
from shared.observability.logging import get_logger
from shared.venues.base import (
    AmbiguousOutcome,
    TemporaryError,
    UpdateListener,
    VenueBalance,
    VenueError,
    VenueFill,
    VenueOperationalError,
    VenueOrder,
    VenueOrderRequest,
    VenueRejected,
    VenueUpdate,
)
from shared.venues.paper_wire import (
    API_PREFIX,
    ORDER_NOT_FOUND,
    STREAM_PATH,
    STREAM_POSITION_HEADER,
    TEMPORARILY_UNAVAILABLE,
    BalanceWire,
    DepositWire,
    FillWire,
    Hello,
    OrderRequestWire,
    OrderWire,
    StreamMessage,
    TransferredWire,
    TransferWire,
)

log = get_logger(__name__)

TokenProvider = Callable[[], Awaitable[str]]
FILLS_PAGE = 1_000
RECONNECT_MAX_DELAY_S = 5.0
_ORDERS = TypeAdapter(list[OrderWire])
_FILLS = TypeAdapter(list[FillWire])
_BALANCES = TypeAdapter(list[BalanceWire])


class PaperHttpVenue:
    """A `VenueAdapter` (and `Funding`) on the paper venue process at `base_url`."""

    def __init__(
        self,
        base_url: str,
        token: TokenProvider,
        *,
        timeout_s: float = 5.0,
        name: str = "paper",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, transport=transport)
        self._listeners: list[UpdateListener] = []
        self.cursor: int | None = None  # the highest fill sequence the stream delivered (None: never connected)
        self.position = 0  # the stream position delivered so far (on the venue process connected to)
        self.connected = asyncio.Event()
        self._progress = asyncio.Condition()

    # --- protocol --------------------------------------------------------------------------------------

    def subscribe(self, listener: UpdateListener) -> None:
        """Receive fills and order status changes from the venue's stream (while `follow` runs)."""
        self._listeners.append(listener)

    async def submit(self, request: VenueOrderRequest) -> VenueOrder:
        response = await self._write("POST", f"{API_PREFIX}/orders", json=_json(OrderRequestWire.of(request)))
        return await self._answered(response, OrderWire.model_validate_json(response.content).to_venue())

    async def cancel(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder:
        response = await self._write("DELETE", _order_path(account_id, client_order_id))
        return await self._answered(response, OrderWire.model_validate_json(response.content).to_venue())

    async def query(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder | None:
        try:
            response = await self._read(_order_path(account_id, client_order_id))
        except VenueRejected as exc:
            if exc.code == ORDER_NOT_FOUND:
                return None
            raise
        return OrderWire.model_validate_json(response.content).to_venue()

    async def open_orders(self, account_id: AccountId) -> Sequence[VenueOrder]:
        response = await self._read(f"{_account_path(account_id)}/open-orders")
        return [order.to_venue() for order in _ORDERS.validate_json(response.content)]

    async def fills_since(self, account_id: AccountId, after_sequence: int) -> Sequence[VenueFill]:
        """Every fill above `after_sequence`, page after page."""
        found: list[VenueFill] = []
        while True:
            response = await self._read(
                f"{_account_path(account_id)}/fills", params={"after": after_sequence, "limit": FILLS_PAGE}
            )
            page = [fill.to_venue() for fill in _FILLS.validate_json(response.content)]
            found.extend(page)
            if len(page) < FILLS_PAGE:
                return found
            after_sequence = page[-1].sequence

    async def balances(self, account_id: AccountId) -> Sequence[VenueBalance]:
        response = await self._read(f"{_account_path(account_id)}/balances")
        return [balance.to_venue() for balance in _BALANCES.validate_json(response.content)]

    async def deposit(self, account_id: AccountId, asset: Asset, amount: Decimal, reference: str) -> VenueBalance:
        body = _json(DepositWire(asset=asset, amount=amount, reference=reference))
        response = await self._write("POST", f"{_account_path(account_id)}/deposits", json=body)
        return BalanceWire.model_validate_json(response.content).to_venue()

    async def withdraw(self, account_id: AccountId, asset: Asset, amount: Decimal, reference: str) -> VenueBalance:
        body = _json(DepositWire(asset=asset, amount=amount, reference=reference))
        response = await self._write("POST", f"{_account_path(account_id)}/withdrawals", json=body)
        return BalanceWire.model_validate_json(response.content).to_venue()

    async def transfer(
        self, source: AccountId, destination: AccountId, asset: Asset, amount: Decimal, reference: str
    ) -> tuple[VenueBalance, VenueBalance]:
        body = _json(TransferWire(to_account_id=destination, asset=asset, amount=amount, reference=reference))
        response = await self._write("POST", f"{_account_path(source)}/transfers", json=body)
        moved = TransferredWire.model_validate_json(response.content)
        return moved.source.to_venue(), moved.destination.to_venue()

    async def close(self) -> None:
        await self._client.aclose()

    # --- the update stream -------------------------------------------------------------------------------

    async def follow(self, stop_event: asyncio.Event) -> None:
        """Follow the venue's update stream until `stop_event`; reconnect (with catch-up) after every drop."""
        delay_s = 0.1
        while not stop_event.is_set():
            try:
                await self._follow_once(stop_event)
                delay_s = 0.1
            except (OSError, WebSocketException, TimeoutError, ValidationError, VenueError) as exc:
                log.warning("venue_stream_lost", venue=self.name, error_type=type(exc).__name__, error=str(exc)[:200])
            finally:
                self.connected.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), timeout=delay_s * (0.5 + random.random()))  # noqa: S311 - jitter, not crypto
            delay_s = min(delay_s * 2, RECONNECT_MAX_DELAY_S)

    async def _follow_once(self, stop_event: asyncio.Event) -> None:
        url = self.base_url.replace("http", "ws", 1) + STREAM_PATH
        if self.cursor is not None:
            url += f"?after={self.cursor}"
        headers = {"Authorization": f"Bearer {await self._token()}"}
        async with connect(url, additional_headers=headers, open_timeout=self._timeout_s, proxy=None) as socket:
            stopping = asyncio.ensure_future(stop_event.wait())
            try:
                while True:
                    received = asyncio.ensure_future(socket.recv())
                    done, _ = await asyncio.wait({received, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    if stopping in done:
                        received.cancel()
                        return
                    await self._on_message(received.result())
            finally:
                stopping.cancel()

    async def _on_message(self, raw: str | bytes) -> None:
        message = StreamMessage.model_validate_json(raw).message
        if isinstance(message, Hello):
            if self.cursor is None:
                self.cursor = message.last_sequence
            await self._advance(message.position, reset=True)
            self.connected.set()
            return
        update = message.update.to_venue()
        await self._deliver(update)
        if isinstance(update, VenueFill):
            self.cursor = max(self.cursor or 0, update.sequence)
        if message.position is not None:
            await self._advance(message.position)

    async def _deliver(self, update: VenueUpdate) -> None:
        for listener in self._listeners:
            try:
                await listener(update)
            except Exception as exc:  # a listener's failure loses nothing: reconciliation catches up
                log.exception("venue_listener_failed", update_type=type(update).__name__, error=str(exc)[:300])

    async def _advance(self, position: int, *, reset: bool = False) -> None:
        async with self._progress:
            self.position = position if reset else max(self.position, position)
            self._progress.notify_all()

    async def _answered(self, response: httpx.Response, order: VenueOrder) -> VenueOrder:
        """Wait (at most `timeout_s`, only while connected) until the stream delivered this write's updates."""
        raw = response.headers.get(STREAM_POSITION_HEADER)
        if raw is None or not raw.isdigit() or not self.connected.is_set():
            return order
        target = int(raw)
        async with self._progress:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._progress.wait_for(lambda: self.position >= target or not self.connected.is_set()),
                    timeout=self._timeout_s,
                )
        return order

    # --- HTTP --------------------------------------------------------------------------------------------

    async def _read(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        try:
            response = await self._client.get(path, params=params, headers=await self._headers())
        except httpx.HTTPError as exc:  # a read changes nothing: whatever failed, asking again is safe
            raise TemporaryError(f"paper venue unreachable: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise TemporaryError(f"paper venue answered {response.status_code} to a read")
        return _checked(response)

    async def _write(self, method: str, path: str, json: Any = None) -> httpx.Response:
        try:
            response = await self._client.request(method, path, json=json, headers=await self._headers())
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:  # never sent
            raise TemporaryError(f"paper venue unreachable: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:  # sent; the venue may have acted on it
            raise AmbiguousOutcome(f"paper venue {method} {path}: {type(exc).__name__} after sending") from exc
        if response.status_code >= 500:
            if response.status_code == 503 and _code(response) == TEMPORARILY_UNAVAILABLE:
                raise TemporaryError(_message(response))
            raise AmbiguousOutcome(f"paper venue answered {response.status_code}: {_message(response)}")
        return _checked(response)

    async def _headers(self) -> dict[str, str]:
        try:
            token = await self._token()
        except Exception as exc:  # no token, no call: nothing was sent
            raise TemporaryError(f"no token for the paper venue: {type(exc).__name__}") from exc
        return {"Authorization": f"Bearer {token}"}


def _checked(response: httpx.Response) -> httpx.Response:
    """A 2xx as it is; a 4xx as the protocol's error."""
    status = response.status_code
    if 200 <= status < 300:
        return response
    if status in (401, 403):
        raise VenueOperationalError(f"the paper venue refused our credentials ({status}): {_message(response)}")
    if status == 429:
        raise TemporaryError("paper venue rate limit")
    code = _code(response)
    if code is None:
        raise VenueOperationalError(f"not an answer of the paper venue ({status}): {response.text[:200]}")
    raise VenueRejected(code, _message(response))


def _error(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _code(response: httpx.Response) -> str | None:
    code = _error(response).get("code")
    return code if isinstance(code, str) and code else None


def _message(response: httpx.Response) -> str:
    return str(_error(response).get("message") or response.reason_phrase)


def _json(model: OrderRequestWire | DepositWire | TransferWire) -> Any:
    return model.model_dump(mode="json")


def _account_path(account_id: AccountId) -> str:
    return f"{API_PREFIX}/accounts/{account_id}"


def _order_path(account_id: AccountId, client_order_id: ClientOrderId) -> str:
    return f"{_account_path(account_id)}/orders/{client_order_id}"
