"""Request and response models of the OMS (decimal strings for money, extra fields refused)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.exits import ExitInstructions
from shared.contracts.orders import OrderCreate as OrderCreate  # the one order body (REST and SubmitOrder.order)
from shared.domain.money import DecimalString, PositiveDecimal
from shared.domain.types import Liquidity, OrderSide, OrderStatus, OrderType, TimeInForce
from shared.web import AssetText, Identifier, Page


class OrderRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str
    account_id: str
    client_order_id: str
    venue: str
    symbol: str
    side: OrderSide
    type: OrderType
    quantity: DecimalString
    limit_price: DecimalString | None
    trigger_price: DecimalString | None
    time_in_force: TimeInForce
    post_only: bool
    status: OrderStatus
    filled_quantity: DecimalString
    average_fill_price: DecimalString | None
    fees_paid: DecimalString
    venue_order_id: str | None
    reason: str | None
    version: int
    created_at: datetime
    updated_at: datetime
    exits: ExitInstructions | None = None


class OrderPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[OrderRead]
    next_cursor: str | None = Field(description="pass as `cursor` to read the next page; null on the last page")


class FillRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fill_id: int
    venue: str
    trade_id: str
    order_id: str
    account_id: str
    symbol: str
    side: OrderSide
    quantity: DecimalString
    price: DecimalString
    fee: DecimalString
    fee_asset: str
    liquidity: Liquidity
    filled_at: datetime


class FillPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[FillRead]
    next_cursor: str | None


class PositionRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: str
    symbol: str
    quantity: DecimalString
    average_entry_price: DecimalString | None = Field(description="cost per unit held, buy fees included")
    cost_basis: DecimalString
    realized_pnl: DecimalString
    fees_paid: DecimalString


class PositionPage(Page[PositionRead]):
    """Spot positions of the accounts you may see (one page: every position)."""


class BalanceRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: str
    asset: str
    total: DecimalString
    reserved: DecimalString
    free: DecimalString


class BalancePage(Page[BalanceRead]):
    """Balances of the accounts you may see (one page: every balance)."""


class DepositCreate(BaseModel):
    """Credit a paper account (creating it on first use), once per `reference`: a repeat answers the first deposit,
    the same reference for another asset or amount is a 409 `deposit_reference_conflict`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    asset: AssetText
    amount: PositiveDecimal
    reference: Identifier


class DepositRead(BaseModel):
    """The deposit, with the balance it left (a repeat of the reference answers the same)."""

    model_config = ConfigDict(extra="forbid")

    account_id: str
    reference: str
    asset: str
    amount: DecimalString
    balance: BalanceRead


class WithdrawalCreate(DepositCreate):
    """Debit a paper account's free balance (reserved money stays), once per `reference`: a repeat answers the first
    withdrawal, the same reference for another asset or amount is a 409 `withdrawal_reference_conflict`."""


class WithdrawalRead(DepositRead):
    """The withdrawal, with the balance it left (a repeat of the reference answers the same)."""
