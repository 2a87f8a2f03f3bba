"""HTTP routes of the OMS (thin: auth, parse, call the service, return)."""

from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from services.oms.adapters import Adapters
from services.oms.errors import OrderNotFound
from services.oms.ledger_repository import DepositRecord
from services.oms.repository import OrderFilter, StoredOrder
from services.oms.schemas import (
    BalancePage,
    BalanceRead,
    DepositCreate,
    DepositRead,
    FillPage,
    FillRead,
    OrderCreate,
    OrderPage,
    OrderRead,
    PositionPage,
    PositionRead,
    WithdrawalCreate,
    WithdrawalRead,
)
from shared.auth.dependencies import ensure_account_access
from shared.auth.tokens import ALL_ACCOUNTS, Principal
from shared.contracts.exits import ExitInstructions
from shared.domain.ledger import Position
from shared.domain.types import OrderId, OrderStatus, Symbol
from shared.errors import COMMON_RESPONSES, Unprocessable
from shared.service_kit import info_router
from shared.web import (
    CURSOR_MAX,
    IDENTIFIER_PATTERN,
    AccountIdPath,
    AccountIdQuery,
    Funder,
    Limit,
    OpaqueCursor,
    OrderIdPath,
    OrderIdQuery,
    OrderReader,
    PortfolioReader,
    SymbolQuery,
    Trader,
    error_responses,
)

router = APIRouter(responses=COMMON_RESPONSES)
router.include_router(info_router("oms"))


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
        **error_responses(404, 409, 422, 503),
    },
)
async def place_order(body: OrderCreate, principal: Trader, oms: Adapters, response: Response) -> OrderRead:
    """Place an order; idempotent by client_order_id (same body: 200 with the existing order, other body: 409)."""
    ensure_account_access(principal, body.account_id)
    result = await oms.placement.place(body, actor=principal.subject)
    if not result.created:
        response.status_code = status.HTTP_200_OK
    return _read(result.stored)


@router.get("/orders", response_model=OrderPage, tags=["orders"])
async def list_orders(
    principal: OrderReader,
    oms: Adapters,
    account_id: AccountIdQuery = None,
    order_status: Annotated[OrderStatus | None, Query(alias="status")] = None,
    symbol: SymbolQuery = None,
    limit: Limit = 100,
    cursor: OpaqueCursor = None,
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
        # Order ids are identifiers; anything else (a NUL byte, a naive time) was not written by this API.
        if before_at.tzinfo is None or not re.fullmatch(IDENTIFIER_PATTERN, before_id):
            raise Unprocessable("cursor is not one this API returned")
    query_filter = OrderFilter(
        _visible_accounts(principal, account_id), order_status, symbol, limit, before_at, before_id
    )
    stored_orders, last = await oms.queries.list_orders(query_filter)
    next_cursor = None if last is None else _encode_cursor(last["created_at"].isoformat(), last["order_id"])
    return OrderPage(items=[_read(stored) for stored in stored_orders], next_cursor=next_cursor)


@router.get("/orders/{order_id}", response_model=OrderRead, tags=["orders"], responses=error_responses(404))
async def get_order(order_id: OrderIdPath, principal: OrderReader, oms: Adapters) -> OrderRead:
    """One order."""
    stored = await oms.queries.get(OrderId(order_id))
    if not principal.can_access_account(stored.order.account_id):
        raise OrderNotFound(f"order {order_id} does not exist")
    return _read(stored)


@router.post(
    "/orders/{order_id}/cancel", response_model=OrderRead, tags=["orders"], responses=error_responses(404, 409, 503)
)
async def cancel_order(order_id: OrderIdPath, principal: Trader, oms: Adapters) -> OrderRead:
    """Cancel an order: withdrawn at once while awaiting approval, otherwise requested at the venue."""
    stored = await oms.queries.get(OrderId(order_id))
    if not principal.can_access_account(stored.order.account_id):
        raise OrderNotFound(f"order {order_id} does not exist")
    return _read(await oms.cancellation.cancel(OrderId(order_id), actor=principal.subject))


@router.get("/fills", response_model=FillPage, tags=["fills"])
async def list_fills(
    principal: OrderReader,
    oms: Adapters,
    account_id: AccountIdQuery = None,
    order_id: OrderIdQuery = None,
    limit: Limit = 100,
    cursor: OpaqueCursor = None,
) -> FillPage:
    """Fills of the accounts you may see, newest first."""
    before = None
    if cursor is not None:
        (text,) = _decode_cursor(cursor, 1)
        # ASCII digits only (`"²".isdigit()` is true) and within a BIGINT, which the fill ids are.
        if not (text.isascii() and text.isdigit()) or int(text) > CURSOR_MAX:
            raise Unprocessable("cursor is not one this API returned")
        before = int(text)
    rows = await oms.queries.list_fills(_visible_accounts(principal, account_id), order_id, limit, before)
    next_cursor = _encode_cursor(str(rows[-1]["fill_id"])) if len(rows) == limit else None
    return FillPage(items=[FillRead.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get("/positions", response_model=PositionPage, tags=["portfolio"])
async def list_positions(principal: PortfolioReader, oms: Adapters, account_id: AccountIdQuery = None) -> PositionPage:
    """Spot positions with average entry price (buy fees included) and realized PnL."""
    rows = await oms.queries.list_positions(_visible_accounts(principal, account_id))
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
    return PositionPage(items=result)


@router.get("/balances", response_model=BalancePage, tags=["portfolio"])
async def list_balances(principal: PortfolioReader, oms: Adapters, account_id: AccountIdQuery = None) -> BalancePage:
    """Balances per asset: total, reserved by open orders, and free."""
    rows = await oms.queries.list_balances(_visible_accounts(principal, account_id))
    return BalancePage(
        items=[
            BalanceRead(
                account_id=row["account_id"],
                asset=row["asset"],
                total=row["total"],
                reserved=row["reserved"],
                free=row["total"] - row["reserved"],
            )
            for row in rows
        ]
    )


@router.post(
    "/accounts/{account_id}/paper/deposits",
    response_model=DepositRead,
    status_code=status.HTTP_201_CREATED,
    tags=["paper"],
    responses=error_responses(409, 422, 503),
)
async def paper_deposit(
    account_id: AccountIdPath, body: DepositCreate, principal: Funder, oms: Adapters
) -> DepositRead:
    """Credit a paper account (created on first deposit) at the paper venue and in the ledger, once per reference."""
    ensure_account_access(principal, account_id)
    if body.amount <= 0:
        raise Unprocessable("amount must be positive", details={"field": "amount"})
    deposit = await oms.funding.deposit(
        account_id, body.asset, body.amount, principal.subject, reference=body.reference
    )
    return DepositRead.model_validate(_flow_read(account_id, deposit))


@router.post(
    "/accounts/{account_id}/paper/withdrawals",
    response_model=WithdrawalRead,
    status_code=status.HTTP_201_CREATED,
    tags=["paper"],
    responses=error_responses(404, 409, 422, 503),
)
async def paper_withdrawal(
    account_id: AccountIdPath, body: WithdrawalCreate, principal: Funder, oms: Adapters
) -> WithdrawalRead:
    """Debit a paper account's free balance at the paper venue and in the ledger, once per reference; 422
    `insufficient_balance` when the free balance does not cover it (nothing moves)."""
    ensure_account_access(principal, account_id)
    if body.amount <= 0:
        raise Unprocessable("amount must be positive", details={"field": "amount"})
    withdrawal = await oms.funding.withdraw(
        account_id, body.asset, body.amount, principal.subject, reference=body.reference
    )
    return WithdrawalRead.model_validate(_flow_read(account_id, withdrawal))


def _flow_read(account_id: str, flow: DepositRecord) -> dict[str, object]:
    """A deposit's or withdrawal's answer: its terms and the balance it left."""
    balance = flow.balance
    if balance is None:  # an applied deposit or withdrawal always carries its balance
        raise RuntimeError(f"{flow.reference!r} answered without its balance")
    return {
        "account_id": account_id,
        "reference": flow.reference,
        "asset": flow.asset,
        "amount": flow.amount,
        "balance": BalanceRead(
            account_id=account_id,
            asset=balance.asset,
            total=balance.total,
            reserved=balance.reserved,
            free=balance.free,
        ),
    }
