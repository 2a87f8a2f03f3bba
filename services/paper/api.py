"""HTTP routes of the paper venue process: the `VenueAdapter` operations, deposits, and the update stream.

Only a service holding `venue:trade` (the OMS's identity) may call them, for the accounts its token grants.
Refusals carry the venue's own codes (`insufficient_funds`, `unknown_order`, ...); see docs/venues.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from services.paper.adapters import Adapters, PaperAdapters, paper_adapters
from shared.auth.dependencies import authorize, ensure_account_access
from shared.auth.roles import Role, Scope
from shared.auth.tokens import ALL_ACCOUNTS, InvalidToken, Principal, RevocationUnavailable, TokenVerifier
from shared.domain.types import AccountId, Asset, ClientOrderId
from shared.errors import COMMON_RESPONSES, ErrorResponse, error_response
from shared.observability.logging import get_logger
from shared.service_kit import info_router
from shared.venues.base import AmbiguousOutcome, TemporaryError, VenueError, VenueOperationalError, VenueRejected
from shared.venues.paper_wire import (
    API_PREFIX,
    ORDER_NOT_FOUND,
    OUTCOME_UNKNOWN,
    REPLAY_OVERLAP,
    STREAM_PATH,
    STREAM_POSITION_HEADER,
    TEMPORARILY_UNAVAILABLE,
    VENUE_OPERATIONAL,
    BalanceWire,
    DepositWire,
    FillWire,
    Hello,
    OrderRequestWire,
    OrderWire,
    StreamMessage,
    TransferredWire,
    TransferWire,
    Update,
    update_wire,
)
from shared.web import IDENTIFIER_MAX_LENGTH, IDENTIFIER_PATTERN, AccountIdPath

log = get_logger(__name__)

T = TypeVar("T")
REPLAY_PAGE = 500
FILLS_PAGE_MAX = 1_000
# Closing codes of the stream (RFC 6455 7.4): a follower too far behind, or the venue stopping, reconnects.
TRY_AGAIN_LATER = 1013
NOT_FOUND_CODES = frozenset({ORDER_NOT_FOUND, "unknown_order"})  # the venue's refusals that name a missing order
POLICY_VIOLATION = 1008

_VENUE_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The venue refused the request (its code says why)"},
    404: {"model": ErrorResponse, "description": "No such order at the venue"},
    500: {"model": ErrorResponse, "description": "The venue is unusable (venue_operational_error)"},
    503: {"model": ErrorResponse, "description": "Nothing happened at the venue (temporarily_unavailable): retry"},
    504: {"model": ErrorResponse, "description": "The write may or may not have taken effect (outcome_unknown)"},
}

Venue = Annotated[Principal, Depends(authorize([Role.SERVICE], Scope.VENUE_TRADE))]
ClientOrderIdPath = Annotated[str, Path(min_length=1, max_length=IDENTIFIER_MAX_LENGTH, pattern=IDENTIFIER_PATTERN)]

router = APIRouter(responses=COMMON_RESPONSES)
router.include_router(info_router("paper"))
venue_router = APIRouter(prefix=API_PREFIX, tags=["venue"], responses=_VENUE_RESPONSES)


async def _ready(adapters: PaperAdapters, call: Awaitable[T]) -> T:
    if not adapters.restored.is_set():
        if asyncio.iscoroutine(call):
            call.close()
        raise TemporaryError("the venue's books are being restored")
    return await call


def _positioned(response: Response, adapters: PaperAdapters) -> None:
    """The stream position after this write: its fills are on the stream up to it (the venue told them first)."""
    response.headers[STREAM_POSITION_HEADER] = str(adapters.hub.position)


def _account(principal: Principal, account_id: str) -> AccountId:
    ensure_account_access(principal, account_id)
    return AccountId(account_id)


@venue_router.post("/orders", response_model=OrderWire, summary="Place an order (idempotent by client order id)")
async def submit(body: OrderRequestWire, principal: Venue, adapters: Adapters, response: Response) -> OrderWire:
    """A repeat of a client order id answers the order it placed first, whatever the rest of the body says."""
    _account(principal, body.account_id)
    order = await _ready(adapters, adapters.venue.submit(body.to_venue()))
    _positioned(response, adapters)
    return OrderWire.of(order)


@venue_router.delete(
    "/accounts/{account_id}/orders/{client_order_id}", response_model=OrderWire, summary="Cancel an order"
)
async def cancel(
    account_id: AccountIdPath,
    client_order_id: ClientOrderIdPath,
    principal: Venue,
    adapters: Adapters,
    response: Response,
) -> OrderWire:
    """Cancelling a closed order answers its final state; an unknown one is 404 `unknown_order`."""
    order = await _ready(
        adapters, adapters.venue.cancel(_account(principal, account_id), ClientOrderId(client_order_id))
    )
    _positioned(response, adapters)
    return OrderWire.of(order)


@venue_router.get(
    "/accounts/{account_id}/orders/{client_order_id}", response_model=OrderWire, summary="An order by client id"
)
async def query(
    account_id: AccountIdPath, client_order_id: ClientOrderIdPath, principal: Venue, adapters: Adapters
) -> OrderWire:
    """404 `order_not_found` when the venue never accepted an order with this client id."""
    order = await _ready(
        adapters, adapters.venue.query(_account(principal, account_id), ClientOrderId(client_order_id))
    )
    if order is None:
        raise VenueRejected(ORDER_NOT_FOUND, f"no order {client_order_id!r} for account {account_id!r}")
    return OrderWire.of(order)


@venue_router.get("/accounts/{account_id}/open-orders", response_model=list[OrderWire], summary="Open orders")
async def open_orders(account_id: AccountIdPath, principal: Venue, adapters: Adapters) -> list[OrderWire]:
    """Every open order of the account, oldest first."""
    orders = await _ready(adapters, adapters.venue.open_orders(_account(principal, account_id)))
    return [OrderWire.of(order) for order in orders]


@venue_router.get("/accounts/{account_id}/fills", response_model=list[FillWire], summary="Fills after a sequence")
async def fills(
    account_id: AccountIdPath,
    principal: Venue,
    adapters: Adapters,
    after: Annotated[int, Query(ge=0, description="the last sequence the caller has")] = 0,
    limit: Annotated[int, Query(ge=1, le=FILLS_PAGE_MAX)] = FILLS_PAGE_MAX,
) -> list[FillWire]:
    """The account's fills with a sequence above `after`, oldest first; a full page means: ask again after it."""
    found = await _ready(adapters, adapters.venue.fills_since(_account(principal, account_id), after, limit))
    return [FillWire.of(fill) for fill in found]


@venue_router.get("/accounts/{account_id}/balances", response_model=list[BalanceWire], summary="Balances")
async def balances(account_id: AccountIdPath, principal: Venue, adapters: Adapters) -> list[BalanceWire]:
    """Total and available (total less what open orders hold) per asset."""
    found = await _ready(adapters, adapters.venue.balances(_account(principal, account_id)))
    return [BalanceWire.of(balance) for balance in found]


@venue_router.post(
    "/accounts/{account_id}/deposits", response_model=BalanceWire, summary="Credit paper money (once per reference)"
)
async def deposit(account_id: AccountIdPath, body: DepositWire, principal: Venue, adapters: Adapters) -> BalanceWire:
    """A reference credited before changes nothing; with another asset or amount it is 400 `reference_reused`."""
    balance = await _ready(
        adapters,
        adapters.venue.deposit(_account(principal, account_id), Asset(body.asset), body.amount, body.reference),
    )
    return BalanceWire.of(balance)


@venue_router.post(
    "/accounts/{account_id}/withdrawals", response_model=BalanceWire, summary="Debit paper money (once per reference)"
)
async def withdraw(account_id: AccountIdPath, body: DepositWire, principal: Venue, adapters: Adapters) -> BalanceWire:
    """A repeat of the reference debits nothing; 400 `insufficient_balance` when the free balance does not cover it,
    `reference_reused` for another asset or amount."""
    balance = await _ready(
        adapters,
        adapters.venue.withdraw(_account(principal, account_id), Asset(body.asset), body.amount, body.reference),
    )
    return BalanceWire.of(balance)


@venue_router.post(
    "/accounts/{account_id}/transfers",
    response_model=TransferredWire,
    summary="Move paper money to another account (once per reference)",
)
async def transfer(
    account_id: AccountIdPath, body: TransferWire, principal: Venue, adapters: Adapters
) -> TransferredWire:
    """Debit the path's account and credit `to_account_id` in one transaction; a repeat of the reference moves
    nothing; 400 `insufficient_balance` when the free balance does not cover it, `reference_reused` for other terms."""
    source, destination = _account(principal, account_id), _account(principal, body.to_account_id)
    debited, credited = await _ready(
        adapters, adapters.venue.transfer(source, destination, Asset(body.asset), body.amount, body.reference)
    )
    return TransferredWire(source=BalanceWire.of(debited), destination=BalanceWire.of(credited))


router.include_router(venue_router)


@router.websocket(STREAM_PATH)
async def stream(websocket: WebSocket, after: int | None = None) -> None:
    """Every fill and order status change, as the venue tells them: first a `hello` (stream position and last fill
    sequence), then with `after` the fills above `after - REPLAY_OVERLAP` and their orders' current state, then live
    updates. The bearer token goes in the handshake's Authorization header."""
    if not await _stream_allowed(websocket):
        await websocket.close(code=POLICY_VIOLATION)
        return
    adapters = paper_adapters(websocket.app.state.runtime)
    subscription = adapters.hub.subscribe()
    try:
        await websocket.accept()
        last_sequence = await adapters.venue.last_sequence()
        await _send(websocket, Hello(position=subscription.position, last_sequence=last_sequence))
        if after is not None:
            await _replay(websocket, adapters, max(0, after - REPLAY_OVERLAP), last_sequence)
        await _follow(websocket, subscription.queue)
    except (WebSocketDisconnect, VenueError) as exc:
        log.info("stream_ended", reason=type(exc).__name__)
    finally:
        adapters.hub.unsubscribe(subscription)


async def _stream_allowed(websocket: WebSocket) -> bool:
    verifier: TokenVerifier = websocket.app.state.token_verifier
    scheme, _, credentials = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        return False
    try:
        principal = await verifier.verify(credentials)
    except (InvalidToken, RevocationUnavailable) as exc:  # a revocation check that cannot answer refuses (fail closed)
        log.warning("stream_refused", reason=type(exc).__name__)
        return False
    # Updates of every account go out on one stream: only a caller granted every account may follow it.
    return (
        principal.has_any_role(Role.SERVICE)
        and principal.has_scopes(Scope.VENUE_TRADE)
        and ALL_ACCOUNTS in principal.accounts
    )


async def _replay(websocket: WebSocket, adapters: PaperAdapters, after: int, until: int) -> None:
    cursor = after
    while cursor < until:
        found, orders = await adapters.venue.fills_after(cursor, REPLAY_PAGE)
        if not found:
            return
        for fill in found:
            await _send(websocket, Update(position=None, update=FillWire.of(fill)))
        for order in orders:
            await _send(websocket, Update(position=None, update=update_wire(order)))
        cursor = found[-1].sequence


async def _follow(websocket: WebSocket, queue: asyncio.Queue[Update | None]) -> None:
    closed = asyncio.ensure_future(websocket.receive())  # the follower never writes: anything is its close
    try:
        while True:
            taken = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({taken, closed}, return_when=asyncio.FIRST_COMPLETED)
            if closed in done:
                taken.cancel()
                return
            message = taken.result()
            if message is None:
                await websocket.close(code=TRY_AGAIN_LATER)
                return
            await _send(websocket, message)
    finally:
        closed.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await closed


async def _send(websocket: WebSocket, message: Hello | Update) -> None:
    await websocket.send_text(StreamMessage(message=message).model_dump_json())


# --- the venue's errors on the wire -------------------------------------------------------------------------------


async def _rejected(_: Request, exc: Exception) -> JSONResponse:
    code, message = (exc.code, exc.message) if isinstance(exc, VenueRejected) else ("rejected", str(exc))
    return error_response(404 if code in NOT_FOUND_CODES else 400, code, message)


async def _temporary(_: Request, exc: Exception) -> JSONResponse:
    return error_response(503, TEMPORARILY_UNAVAILABLE, str(exc) or "nothing happened; retry")


async def _ambiguous(_: Request, exc: Exception) -> JSONResponse:
    return error_response(504, OUTCOME_UNKNOWN, str(exc) or "the outcome is unknown: query by client order id")


async def _operational(_: Request, exc: Exception) -> JSONResponse:
    log.error("venue_operational_error", error=str(exc)[:300])
    return error_response(500, VENUE_OPERATIONAL, str(exc))


def install_venue_errors(app: FastAPI) -> None:
    """Map the venue's typed errors to statuses and codes (the client maps them back: shared/venues/paper_http.py)."""
    app.add_exception_handler(VenueRejected, _rejected)
    app.add_exception_handler(TemporaryError, _temporary)
    app.add_exception_handler(AmbiguousOutcome, _ambiguous)
    app.add_exception_handler(VenueOperationalError, _operational)
