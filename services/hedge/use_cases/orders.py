"""Hedge orders: size the trade that brings the hedge fraction back into the band, queue it as one `SubmitOrder`
command with a deterministic client order id, and settle it from the OMS's order events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.hedge.metrics import HEDGE_ORDERS
from services.hedge.repository import HedgeRepository
from services.hedge.use_cases.common import PRODUCER, HedgeContext, free_of
from shared.audit.log import append as audit_append
from shared.contracts.base import outbox_payload
from shared.contracts.hedge import HedgeRebalanceRequested
from shared.contracts.orders import CommandRejected, OrderCreate, OrderEventMessage, OrderFilled, SubmitOrder
from shared.contracts.registry import parse_message
from shared.domain.hedge import (
    HedgeTrade,
    cap_to_free_balance,
    hedge_client_order_id,
    hedge_trade,
    rebalance_to,
)
from shared.domain.ledger import Balance
from shared.domain.pricing import market_buy_reservation_price
from shared.domain.types import TERMINAL_STATUSES, OrderType
from shared.events import Envelope
from shared.observability.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class HedgePosition:
    """Base the hedge has sold (net of buy-backs), base the account holds, and the resulting hedge fraction."""

    hedged: Decimal
    held: Decimal
    current: Decimal


@dataclass(frozen=True, slots=True)
class Target:
    """The fraction in force and the band around it."""

    fraction: Decimal
    band: Decimal


class HedgeOrders:
    """Sends hedge orders to the OMS and settles them from its events."""

    def __init__(self, context: HedgeContext) -> None:
        self.context = context

    async def rebalance(
        self,
        session: AsyncSession,
        row: RowMapping,
        position: HedgePosition,
        target: Target,
        price: Decimal,
        balances: Mapping[str, Balance],
        now: datetime,
    ) -> None:
        """Outside the band and with no hedge order open: queue the order to the band edge (caller's transaction)."""
        settings = self.context.settings
        account_id = row["account_id"]
        repo = HedgeRepository(session)
        if not settings.orders_enabled or await repo.open_order(account_id) is not None:
            return
        settled_at = await repo.last_fill_settled_at(account_id)
        if settled_at is not None and (row["holdings_at"] is None or row["holdings_at"] < settled_at):
            return  # the balances predate the last hedge fill: wait for fresh ones before sizing again
        new_fraction = rebalance_to(position.current, target.fraction, target.band)
        if new_fraction is None:
            return
        trade = cap_to_free_balance(
            hedge_trade(
                position.hedged, position.held, new_fraction, settings.quantity_increment, settings.min_quantity
            ),
            free_base=free_of(balances, settings.base_asset),
            free_quote=free_of(balances, settings.quote_asset),
            buy_price=market_buy_reservation_price(price),  # the OMS's own slippage buffer on market buys
            quantity_increment=settings.quantity_increment,
            min_quantity=settings.min_quantity,
        )
        if trade is not None:
            await self._submit(session, row, trade, (position.current, new_fraction), now)

    async def _submit(
        self,
        session: AsyncSession,
        row: RowMapping,
        trade: HedgeTrade,
        fractions: tuple[Decimal, Decimal],
        now: datetime,
    ) -> None:
        settings = self.context.settings
        current, new_fraction = fractions
        account_id = row["account_id"]
        version = row["target_version"] + 1
        client_order_id = hedge_client_order_id(account_id, version)
        repo = HedgeRepository(session)
        await repo.update_account(account_id, target_version=version)
        await repo.insert_order(
            client_order_id=client_order_id,
            account_id=account_id,
            target_version=version,
            symbol=settings.hedge_symbol,
            side=trade.side.value,
            quantity=trade.quantity,
            from_fraction=current,
            to_fraction=new_fraction,
            status="sent",
            created_at=now,
        )
        order = OrderCreate(
            account_id=account_id,
            client_order_id=client_order_id,
            symbol=settings.hedge_symbol,
            side=trade.side,
            type=OrderType.MARKET,
            quantity=trade.quantity,
        )
        await self.context.emit(
            session,
            settings.commands_topic,
            SubmitOrder(order=order),
            account_id=account_id,
            aggregate_id=client_order_id,
        )
        target = HedgeRebalanceRequested(
            account_id=account_id,
            target_version=version,
            from_fraction=current,
            to_fraction=new_fraction,
            client_order_id=client_order_id,
            side=trade.side,
            quantity=trade.quantity,
        )
        await self.context.emit(session, settings.target_topic, target, account_id=account_id)
        HEDGE_ORDERS.labels(trade.side.value).inc()
        await audit_append(
            session,
            actor=PRODUCER,
            action="hedge.order_requested",
            target=account_id,
            details=outbox_payload(target),
            chain=f"hedge:{account_id}",
            occurred_at=now,
        )

    async def on_order_event(self, session: AsyncSession, envelope: Envelope) -> None:
        """Settle our hedge orders from the OMS's order events (at the OMS's time); fills put the account under
        watch. A message that breaks its contract raises ContractViolation (dead-lettered by the consumer)."""
        message = parse_message(envelope, self.context.settings.order_events_topic)
        repo = HedgeRepository(session)
        if isinstance(message, CommandRejected):
            if await repo.settle_order(envelope.aggregate_id, "command_rejected", envelope.occurred_at):
                log.warning("hedge_order_rejected", client_order_id=envelope.aggregate_id, code=message.code)
            return
        if not isinstance(message, OrderEventMessage):
            return  # an approval request of the OMS's: not about a hedge order's progress
        if isinstance(message, OrderFilled):
            await repo.ensure_account(message.account_id)
            await repo.record_fill(message.client_order_id, message.filled_quantity)
        if message.status in TERMINAL_STATUSES:
            await repo.settle_order(message.client_order_id, message.status.value, envelope.occurred_at)
        else:
            await repo.update_order_status(message.client_order_id, message.status.value)
