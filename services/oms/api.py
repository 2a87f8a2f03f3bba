"""HTTP routes of the OMS (thin: auth, parse, call the service, return)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from services.oms.errors import OrderNotFound
from services.oms.repository import OmsRepository, OrderFilter, StoredOrder
from services.oms.schemas import (
    BalanceRead,
    DepositCreate,
    DepositRead,
    FillPage,
    FillRead,
    OrderCreate,
    OrderPage,
    OrderRead,
    PositionRead,
)
from services.oms.service import OrderService
from shared.auth.dependencies import ensure_account_access, require_roles
from shared.auth.roles import Role
from shared.auth.tokens import ALL_ACCOUNTS, Principal
from shared.contracts.exits import ExitInstructions
from shared.db import UnitOfWork
from shared.domain.ledger import Position
from shared.domain.types import OrderId, OrderStatus, Symbol
from shared.errors import COMMON_RESPONSES, ErrorResponse, Unprocessable
from shared.service_kit import info_router

READERS = (Role.VIEWER, Role.OPERATOR, Role.RISK, Role.DIRECTOR, Role.ADMIN, Role.AUDITOR, Role.SERVICE)
TRADERS = (Role.OPERATOR, Role.SERVICE)

Reader = Annotated[Principal, Depends(require_roles(*READERS))]
Trader = Annotated[Principal, Depends(require_roles(*TRADERS))]
Funder = Annotated[Principal, Depends(require_roles(Role.OPERATOR, Role.ADMIN))]


def get_order_service(request: Request) -> OrderService:
    service: OrderService = request.app.state.runtime.extras["orders"]
    return service


Orders = Annotated[OrderService, Depends(get_order_service)]
OrderIdPath = Annotated[str, Path(min_length=1, max_length=64)]
AccountIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]

router = APIRouter(responses=COMMON_RESPONSES)
router.include_router(info_router("oms"))


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse} for code in codes}


def _read(stored: StoredOrder) -> OrderRead:
    order = stored.order
    return OrderRead(
        order_id=order.id,
        account_id=order.account_id,
        client_order_id=order.client_order_id,
        venue=stored.venue,
        symbol=order.symbol,
        side=order.side,
        type=order.type,
        quantity=order.quantity,
        limit_price=order.limit_price,
        trigger_price=order.trigger_price,
        time_in_force=order.time_in_force,
        post_only=order.post_only,
        status=order.status,
        filled_quantity=order.filled_quantity,
        average_fill_price=order.average_fill_price,
        fees_paid=order.fees_paid,
        venue_order_id=order.venue_order_id,
        reason=order.reason,
        version=order.version,
        created_at=stored.created_at,
        updated_at=order.updated_at,
        exits=None if stored.exits is None else ExitInstructions.model_validate(stored.exits),
    )


def _visible_accounts(principal: Principal, account_id: str | None) -> list[str] | None:
    """Accounts a query may return: the asked one (if granted), else all granted ones (None = every account)."""
    if account_id is not None:
        ensure_account_access(principal, account_id)
        return [account_id]
    if ALL_ACCOUNTS in principal.accounts:
        return None
    return sorted(principal.accounts)


def _encode_cursor(*parts: str) -> str:
    return base64.urlsafe_b64encode("|".join(parts).encode()).decode()


def _decode_cursor(cursor: str, parts: int) -> list[str]:
    try:
        values = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
    except (ValueError, UnicodeDecodeError):
        raise Unprocessable("cursor is not one this API returned") from None
    if len(values) != parts:
        raise Unprocessable("cursor is not one this API returned")
    return values


@router.post(
    "/orders",
    response_model=OrderRead,
    status_code=status.HTTP_201_CREATED,
    tags=["orders"],
    responses={
        200: {"model": OrderRead, "description": "Same client_order_id and body: the existing order"},
        **_responses(404, 409, 422, 503),
    },
)
async def place_order(body: OrderCreate, principal: Trader, orders: Orders, response: Response) -> OrderRead:
    """Place an order; idempotent by client_order_id (same body: 200 with the existing order, other body: 409)."""
    ensure_account_access(principal, body.account_id)
    result = await orders.place(body, actor=principal.subject)
    if not result.created:
        response.status_code = status.HTTP_200_OK
    return _read(result.stored)


@router.get("/orders", response_model=OrderPage, tags=["orders"])
async def list_orders(
    principal: Reader,
    orders: Orders,
    account_id: Annotated[str | None, Query(max_length=64)] = None,
    order_status: Annotated[OrderStatus | None, Query(alias="status")] = None,
    symbol: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> OrderPage:
    """Orders of the accounts you may see, newest first, with cursor pagination."""
    before_at: datetime | None = None
    before_id: str | None = None
    if cursor is not None:
        at_text, before_id = _decode_cursor(cursor, 2)
        try:
            before_at = datetime.fromisoformat(at_text)
        except ValueError:
            raise Unprocessable("cursor is not one this API returned") from None
    query_filter = OrderFilter(
        _visible_accounts(principal, account_id), order_status, symbol, limit, before_at, before_id
    )
    async with UnitOfWork(orders.sessionmaker) as uow:
        repo = OmsRepository(uow.session)
        rows = await repo.list_orders(query_filter)
        items = [_read(stored) for row in rows if (stored := await repo.load(OrderId(row["order_id"])))]
    next_cursor = None
    if len(rows) == limit:
        last = rows[-1]
        next_cursor = _encode_cursor(last["created_at"].isoformat(), last["order_id"])
    return OrderPage(items=items, next_cursor=next_cursor)


@router.get("/orders/{order_id}", response_model=OrderRead, tags=["orders"], responses=_responses(404))
async def get_order(order_id: OrderIdPath, principal: Reader, orders: Orders) -> OrderRead:
    """One order."""
    stored = await orders.get(OrderId(order_id))
    if not principal.can_access_account(stored.order.account_id):
        raise OrderNotFound(f"order {order_id} does not exist")
    return _read(stored)


@router.post(
    "/orders/{order_id}/cancel", response_model=OrderRead, tags=["orders"], responses=_responses(404, 409, 503)
)
async def cancel_order(order_id: OrderIdPath, principal: Trader, orders: Orders) -> OrderRead:
    """Cancel an order: withdrawn at once while awaiting approval, otherwise requested at the venue."""
    stored = await orders.get(OrderId(order_id))
    if not principal.can_access_account(stored.order.account_id):
        raise OrderNotFound(f"order {order_id} does not exist")
    return _read(await orders.cancel(OrderId(order_id), actor=principal.subject))


@router.get("/fills", response_model=FillPage, tags=["fills"])
async def list_fills(
    principal: Reader,
    orders: Orders,
    account_id: Annotated[str | None, Query(max_length=64)] = None,
    order_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> FillPage:
    """Fills of the accounts you may see, newest first."""
    before = None
    if cursor is not None:
        (text,) = _decode_cursor(cursor, 1)
        if not text.isdigit():
            raise Unprocessable("cursor is not one this API returned")
        before = int(text)
    async with UnitOfWork(orders.sessionmaker) as uow:
        rows = await OmsRepository(uow.session).list_fills(
            _visible_accounts(principal, account_id), order_id, limit, before
        )
    next_cursor = _encode_cursor(str(rows[-1]["fill_id"])) if len(rows) == limit else None
    return FillPage(items=[FillRead.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get("/positions", response_model=list[PositionRead], tags=["portfolio"])
async def list_positions(
    principal: Reader, orders: Orders, account_id: Annotated[str | None, Query(max_length=64)] = None
) -> list[PositionRead]:
    """Spot positions with average entry price (buy fees included) and realized PnL."""
    async with UnitOfWork(orders.sessionmaker) as uow:
        rows = await OmsRepository(uow.session).list_positions(_visible_accounts(principal, account_id))
    result = []
    for row in rows:
        position = Position(
            Symbol(row["symbol"]), row["quantity"], row["cost_basis"], row["realized_pnl"], row["fees_paid"]
        )
        result.append(
            PositionRead(
                account_id=row["account_id"],
                symbol=row["symbol"],
                quantity=position.quantity,
                average_entry_price=position.average_entry_price,
                cost_basis=position.cost_basis,
                realized_pnl=position.realized_pnl,
                fees_paid=position.fees_paid,
            )
        )
    return result


@router.get("/balances", response_model=list[BalanceRead], tags=["portfolio"])
async def list_balances(
    principal: Reader, orders: Orders, account_id: Annotated[str | None, Query(max_length=64)] = None
) -> list[BalanceRead]:
    """Balances per asset: total, reserved by open orders, and free."""
    async with UnitOfWork(orders.sessionmaker) as uow:
        rows = await OmsRepository(uow.session).list_balances(_visible_accounts(principal, account_id))
    return [
        BalanceRead(
            account_id=row["account_id"],
            asset=row["asset"],
            total=row["total"],
            reserved=row["reserved"],
            free=row["total"] - row["reserved"],
        )
        for row in rows
    ]


@router.post(
    "/accounts/{account_id}/paper/deposits",
    response_model=DepositRead,
    status_code=status.HTTP_201_CREATED,
    tags=["paper"],
    responses=_responses(409),
)
async def paper_deposit(
    account_id: AccountIdPath, body: DepositCreate, principal: Funder, orders: Orders
) -> DepositRead:
    """Credit a paper account (created on first deposit) at the paper venue and in the ledger."""
    ensure_account_access(principal, account_id)
    if body.amount <= 0:
        raise Unprocessable("amount must be positive", details={"field": "amount"})
    ledger = await orders.deposit(account_id, body.asset, body.amount, actor=principal.subject)
    balance = ledger.balance(body.asset)  # type: ignore[arg-type]
    return DepositRead(
        account_id=account_id,
        balance=BalanceRead(
            account_id=account_id,
            asset=balance.asset,
            total=balance.total,
            reserved=balance.reserved,
            free=balance.free,
        ),
    )
