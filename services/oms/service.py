"""The OMS's use cases wired together for one process (`OrderService`): placement, execution, cancel,
reconciliation, approvals, funding and reads, each a small class in `services/oms/use_cases/`.

The order row (state SUBMITTED), its reservation, outbox events and audit entries commit together *before* the
venue is called (ARCHITECTURE.md 4.3). An ambiguous venue answer leaves the order SUBMITTED; the resolver queries
the venue by client order id and resubmits only under the same id, which the venue deduplicates.

`send` and `resolve` are handed to the use cases that call them as this object's bound methods, so a subclass
that wraps them (the crash and resolver probes of the reliability tests) sees every call.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.oms.config import OmsSettings
from services.oms.ledger_repository import DepositRecord
from services.oms.repository import StoredOrder
from services.oms.schemas import OrderCreate
from services.oms.use_cases import (
    SYSTEM_ACTOR,
    ApprovalDecision,
    CancelOrder,
    DecideApproval,
    ExecuteOrders,
    FundPaperAccount,
    OmsContext,
    OrderQueries,
    PlaceOrder,
    PlaceResult,
    PreTradeChain,
    ReconcileAccounts,
    ReconcileIncomplete,
    ReconcileReport,
    ResolveOrder,
    ResolveOutcome,
    TransferBetweenAccounts,
    exits_problem,
    order_payload,
    request_hash,
)
from shared.domain.orders import Order
from shared.domain.types import AccountId, OrderId
from shared.events.tables import EventTables
from shared.venues.base import LatestBook, VenueAdapter, VenueFill, VenueOrder, VenueUpdate
from shared.venues.latest_book import RedisLatestBook

__all__ = [
    "SYSTEM_ACTOR",
    "OrderService",
    "PlaceResult",
    "ReconcileIncomplete",
    "ReconcileReport",
    "ResolveOutcome",
    "exits_problem",
    "order_payload",
    "request_hash",
]


def _nothing() -> None:
    return None


class OrderService:
    """One instance per process, shared by REST, consumers and background loops; delegates to the use cases."""

    def __init__(
        self,
        *,
        settings: OmsSettings,
        sessionmaker: async_sessionmaker[AsyncSession],
        tables: EventTables,
        venue: VenueAdapter,
        redis: Redis,
        clock: Callable[[], datetime],
        on_commit: Callable[[], None] = _nothing,
        latest_book: LatestBook | None = None,
    ) -> None:
        self.ctx = OmsContext.build(
            settings=settings, sessionmaker=sessionmaker, tables=tables, venue=venue, clock=clock, on_commit=on_commit
        )
        self.redis = redis
        self.latest_book: LatestBook = latest_book if latest_book is not None else RedisLatestBook(redis)
        self.pre_trade = PreTradeChain(self.ctx, self.latest_book)
        self.execution = ExecuteOrders(self.ctx)
        self.placement = PlaceOrder(self.ctx, self.pre_trade, self.execution, send=self.send)
        self.cancellation = CancelOrder(self.ctx, self.execution)
        self.resolver = ResolveOrder(
            self.ctx, self.execution, self.cancellation, send=self.send, release_check=self.pre_trade.release_check
        )
        self.funding = FundPaperAccount(self.ctx)
        self.transfers = TransferBetweenAccounts(self.ctx)
        self.reconciliation = ReconcileAccounts(self.ctx, self.execution, self.funding, resolve=self.resolve)
        self.approvals = DecideApproval(self.ctx, self.pre_trade)
        self.queries = OrderQueries(self.ctx)

    @property
    def settings(self) -> OmsSettings:
        return self.ctx.settings

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self.ctx.sessionmaker

    @property
    def tables(self) -> EventTables:
        return self.ctx.tables

    @property
    def venue(self) -> VenueAdapter:
        return self.ctx.venue

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.ctx.clock

    async def place(self, body: OrderCreate, actor: str, origin: str = "rest") -> PlaceResult:
        """Record the order (SUBMITTED, PENDING_APPROVAL or DENIED), then send it to the venue."""
        return await self.placement.place(body, actor, origin)

    async def record(
        self,
        session: AsyncSession,
        body: OrderCreate,
        actor: str,
        origin: str,
        *,
        model_confidence: Decimal | None = None,
    ) -> PlaceResult:
        """Inside the caller's transaction: validate, run the pre-trade checks and persist the order."""
        return await self.placement.record(session, body, actor, origin, model_confidence=model_confidence)

    async def send(self, order_id: OrderId) -> Order | None:
        """Send a SUBMITTED order to the venue and apply the answer; the order as that left it (None: unknown)."""
        return await self.execution.send(order_id)

    async def apply_update(self, update: VenueUpdate) -> None:
        """Apply a venue fill or status change (idempotent); the venue's update listener."""
        await self.execution.apply_update(update)

    async def apply_fill(self, fill: VenueFill) -> bool:
        """Apply one fill exactly once; True when it changed something."""
        return await self.execution.apply_fill(fill)

    async def apply_status(self, update: VenueOrder) -> bool:
        """Move the order to what the venue reports, when legal; True when it changed."""
        return await self.execution.apply_status(update)

    async def catch_up_fills(self, account_id: AccountId) -> int:
        """Apply every venue fill after the account's cursor."""
        return await self.execution.catch_up_fills(account_id)

    async def cancel(self, order_id: OrderId, actor: str) -> StoredOrder:
        """Cancel: withdrawn at once while awaiting approval, otherwise requested at the venue."""
        return await self.cancellation.cancel(order_id, actor)

    async def resolve(self, order_id: OrderId, *, at_startup: bool = False) -> ResolveOutcome:
        """Ask the venue about one unresolved order by client id and apply the answer."""
        return await self.resolver.resolve(order_id, at_startup=at_startup)

    async def reconcile(self) -> ReconcileReport:
        """Startup reconciliation of every account with the venue."""
        return await self.reconciliation.reconcile()

    async def decide(
        self,
        session: AsyncSession,
        order_id: OrderId,
        decision: ApprovalDecision,
        reason: str | None,
        actor: str,
        payload_hash: str,
    ) -> bool:
        """Apply a director decision on the payload `payload_hash` to an order awaiting approval, in the caller's
        transaction."""
        return await self.approvals.decide(session, order_id, decision, reason, actor, payload_hash)

    async def deposit(
        self, account_id: str, asset: str, amount: Decimal, actor: str, *, reference: str
    ) -> DepositRecord:
        """Credit a paper account at the venue and in the ledger, once per reference."""
        return await self.funding.deposit(account_id, asset, amount, actor, reference=reference)

    async def get(self, order_id: OrderId) -> StoredOrder:
        """One order, or OrderNotFound."""
        return await self.queries.get(order_id)
