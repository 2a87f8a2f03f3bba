"""A director's decision on an order awaiting approval (`ApprovalDecided` from the approval service)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.oms.repository import OmsRepository
from services.oms.use_cases.context import OmsContext
from services.oms.use_cases.order_store import locked_order, release_reservation
from services.oms.use_cases.pre_trade import DenialCode
from services.oms.use_cases.publishing import publish_order_events
from shared.contracts.approvals import ApprovalDecision
from shared.domain.types import OrderId, OrderStatus


class DecideApproval:
    """Approved: the order becomes SUBMITTED and the resolver sends it (after the caller's transaction commits).
    Rejected or expired: the order is denied/expired and its reservation released."""

    def __init__(self, ctx: OmsContext) -> None:
        self.ctx = ctx

    async def decide(
        self, session: AsyncSession, order_id: OrderId, decision: ApprovalDecision, reason: str | None, actor: str
    ) -> bool:
        """Apply the decision in the caller's transaction; about an order no longer awaiting approval: False."""
        repo = OmsRepository(session)
        stored = await locked_order(repo, order_id)
        order, now = stored.order, self.ctx.clock()
        if order.status is not OrderStatus.PENDING_APPROVAL:
            return False
        match decision:
            case ApprovalDecision.APPROVED:
                order, events = order.approve(now)
            case ApprovalDecision.EXPIRED:
                order, events = order.expire(now)
            case ApprovalDecision.REJECTED:
                rejected = f"{DenialCode.APPROVAL_REJECTED}: {reason or 'rejected by a director'}"
                order, events = order.deny(rejected, now)
        if order.is_terminal:
            await release_reservation(session, self.ctx.tables, order, now)
        await repo.save(order, events)
        await publish_order_events(session, self.ctx.tables, order, events, actor)
        return True
