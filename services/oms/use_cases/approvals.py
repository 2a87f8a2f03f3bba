"""A director's decision on an order awaiting approval (`ApprovalDecided` from the approval service).

Release check: an approval releases the order only when the decision's hash is the hash of the payload the OMS
asked about (stored with the order) and the order it is about to send has exactly that payload's venue fields.
Anything else (no stored payload, another hash, another order) denies the order with `approval_mismatch`.

Release check, second half: the order passes the trading state and the risk limits again at the moment it is
released, as they are now (R12). An account halted, made reduce-only or given a lower limit while the order
waited gets the order denied with that check's code (`trading_halted`, `trading_reducing`, a limit's code),
recorded and audited like any denial; unknown controls are a 503 and the decision is retried, never a release.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.oms.repository import OmsRepository, StoredOrder
from services.oms.use_cases.context import OmsContext
from services.oms.use_cases.order_store import locked_order, release_reservation
from services.oms.use_cases.placement import approval_request
from services.oms.use_cases.pre_trade import DenialCode, PreTradeChain
from services.oms.use_cases.publishing import publish_order_events
from shared.contracts.approvals import ApprovalDecision, OrderApprovalRequested, approval_payload_hash
from shared.contracts.exits import ExitInstructions
from shared.domain.types import OrderId, OrderStatus
from shared.observability.logging import get_logger

log = get_logger(__name__)


def approval_mismatch(stored: StoredOrder, approved_hash: str) -> str | None:
    """Why `approved_hash` does not release this order (None: it is the approval of exactly this order)."""
    if stored.approval_payload is None:
        return "no approval request is recorded for this order"
    if approval_payload_hash(stored.approval_payload) != approved_hash:
        return "the approved payload hash is not the hash of the payload this order was held for"
    try:
        requested = OrderApprovalRequested.model_validate(stored.approval_payload)
        exits = None if stored.exits is None else ExitInstructions.model_validate(stored.exits)
    except ValueError:  # pydantic ValidationError included
        return "the recorded approval request no longer reads as its contract"
    order = stored.order
    sent = approval_request(order, exits, requested.notional, requested.reasons, requested.requested_by)
    differing = sorted(k for k, v in sent.venue_fields().items() if requested.venue_fields().get(k) != v)
    if differing or requested.subject_id != order.id:
        return f"the order to send differs from the approved one in {', '.join(differing) or 'subject_id'}"
    return None


class DecideApproval:
    """Approved (and the release check passes): the order becomes SUBMITTED and the resolver sends it (after the
    caller's transaction commits). Rejected, expired or a failed release check: the order is denied/expired and its
    reservation released."""

    def __init__(self, ctx: OmsContext, pre_trade: PreTradeChain) -> None:
        self.ctx = ctx
        self.pre_trade = pre_trade

    async def decide(
        self,
        session: AsyncSession,
        order_id: OrderId,
        decision: ApprovalDecision,
        reason: str | None,
        actor: str,
        payload_hash: str,
    ) -> bool:
        """Apply the decision in the caller's transaction; about an order no longer awaiting approval: False."""
        repo = OmsRepository(session)
        stored = await locked_order(repo, order_id)
        order, now = stored.order, self.ctx.clock()
        if order.status is not OrderStatus.PENDING_APPROVAL:
            return False
        match decision:
            case ApprovalDecision.APPROVED:
                mismatch = approval_mismatch(stored, payload_hash)
                denial = None if mismatch is not None else await self.pre_trade.release_check(repo, stored)
                if mismatch is not None:
                    log.warning("approval_mismatch", order_id=order_id, problem=mismatch)
                    order, events = order.deny(f"{DenialCode.APPROVAL_MISMATCH}: {mismatch}", now)
                elif denial is not None:
                    log.warning("approved_order_denied_at_release", order_id=order_id, code=denial.code)
                    order, events = order.deny(denial.reason, now)
                else:
                    order, events = order.approve(now)
            case ApprovalDecision.EXPIRED:
                order, events = order.expire(now)
            case ApprovalDecision.REJECTED:
                rejected = f"{DenialCode.APPROVAL_REJECTED}: {reason or 'rejected by a director'}"
                order, events = order.deny(rejected, now)
        if order.is_terminal:
            await release_reservation(session, self.ctx.tables, order, now)
        await repo.save(order, events)
        await publish_order_events(session, self.ctx.tables, order, events, actor, exits=stored.exits)
        return True
