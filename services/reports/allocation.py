"""The capital allocator: each account's target share of firm NAV with a band, and a rebalancing proposal when
an account's share leaves its band, sent to the directors (hitl) as a `capital_transfer` approval request.

It lives in the reports service because that is where every account's NAV is (the read model of fills,
balances, cash flows and marks). The firm here is the accounts given a target. A check values each of them now,
and when at least one share is off its target by more than its band, proposes one transfer, in the quote
asset, from the most over-allocated account to the most under-allocated one, of the smaller of the two gaps
(rounded down to the cent); at most one proposal is open at a time (a unique index), so a drift repeated by
later checks yields no second proposal until the directors decided, nor, once approved, until the read model
has seen the transfer (both cash flows and both balances; at most `settle` after the decision). The OMS holds the proposed transfer and
moves it only on the approval of exactly that request; `ApprovalDecided` closes the proposal here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.reports.repository import TS, balance_history, cash_flows, metadata
from services.reports.service import ReportQueries
from shared.audit import append as audit_append
from shared.contracts.approvals import ApprovalDecided, CapitalTransferApprovalRequested, SubjectType
from shared.contracts.registry import new_envelope
from shared.db import UnitOfWork
from shared.db.base import Money
from shared.domain.money import format_decimal
from shared.events import add_to_outbox
from shared.events.tables import EventTables

CENT = Decimal("0.01")
ALLOCATOR_ACTOR = "service:reports-allocator"
AUDIT_CHAIN = "reports:allocation"

allocation_targets = sa.Table(
    "allocation_targets",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("target_share", sa.Numeric(38, 18)),
    sa.Column("band", sa.Numeric(38, 18)),
    sa.Column("set_by", sa.Text),
    sa.Column("set_at", TS),
)
allocation_proposals = sa.Table(
    "allocation_proposals",
    metadata,
    sa.Column("proposal_id", sa.Text, primary_key=True),
    sa.Column("from_account_id", sa.Text),
    sa.Column("to_account_id", sa.Text),
    sa.Column("asset", sa.Text),
    sa.Column("amount", Money),
    sa.Column("drifted_account_id", sa.Text),
    sa.Column("share", sa.Numeric(38, 18)),
    sa.Column("target_share", sa.Numeric(38, 18)),
    sa.Column("status", sa.Text),
    sa.Column("proposed_at", TS),
    sa.Column("decided_at", TS),
)
PROPOSED = "proposed"


@dataclass(frozen=True, slots=True)
class Target:
    account_id: str
    target_share: Decimal
    band: Decimal


@dataclass(frozen=True, slots=True)
class Proposal:
    proposal_id: str
    from_account_id: str
    to_account_id: str
    asset: str
    amount: Decimal
    drifted_account_id: str
    share: Decimal
    target_share: Decimal
    status: str


def rebalance(targets: Sequence[Target], navs: dict[str, Decimal]) -> tuple[str, str, Decimal, Target, Decimal] | None:
    """(from, to, amount, the most drifted target, its share) when a share is off its target beyond its band."""
    total = sum(navs.values(), Decimal(0))
    if total <= 0 or len(targets) < 2:
        return None
    drift = {t.account_id: navs[t.account_id] / total - t.target_share for t in targets}
    drifted = [t for t in targets if abs(drift[t.account_id]) > t.band]
    if not drifted:
        return None
    # The most drifted (an over-allocated one first on a tie: the money it holds is what moves).
    worst = max(drifted, key=lambda t: (abs(drift[t.account_id]), drift[t.account_id] > 0, t.account_id))
    source = max(targets, key=lambda t: (drift[t.account_id], t.account_id))
    destination = min(targets, key=lambda t: (drift[t.account_id], t.account_id))
    amount = (min(drift[source.account_id], -drift[destination.account_id]) * total).quantize(CENT, ROUND_DOWN)
    if amount <= 0:
        return None
    return source.account_id, destination.account_id, amount, worst, navs[worst.account_id] / total


class CapitalAllocator:
    """Targets, the drift check and the proposals' state (the approval itself is hitl's, the move the OMS's)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        tables: EventTables,
        queries: ReportQueries,
        topic: str,
        clock: Callable[[], datetime],
        on_commit: Callable[[], None],
        settle: timedelta = timedelta(minutes=10),
    ) -> None:
        self.sessionmaker = sessionmaker
        self.tables = tables
        self.queries = queries
        self.topic = topic
        self.clock = clock
        self.on_commit = on_commit
        self.settle = settle

    async def set_targets(self, targets: Sequence[Target], actor: str) -> list[Target]:
        """Replace every target (shares adding up to 1, checked by the request schema), audited."""
        now = self.clock()
        async with UnitOfWork(self.sessionmaker) as uow:
            await uow.session.execute(sa.delete(allocation_targets))
            await uow.session.execute(
                pg_insert(allocation_targets),
                [
                    {
                        "account_id": t.account_id,
                        "target_share": t.target_share,
                        "band": t.band,
                        "set_by": actor,
                        "set_at": now,
                    }
                    for t in targets
                ],
            )
            await audit_append(
                uow.session,
                actor=actor,
                action="allocation.targets_set",
                target="firm",
                details={t.account_id: [format_decimal(t.target_share), format_decimal(t.band)] for t in targets},
                chain=AUDIT_CHAIN,
            )
        return list(targets)

    async def targets(self) -> list[Target]:
        async with UnitOfWork(self.sessionmaker) as uow:
            rows = await uow.session.execute(sa.select(allocation_targets).order_by(allocation_targets.c.account_id))
            return [Target(r.account_id, r.target_share, r.band) for r in rows]

    async def proposals(self) -> list[Proposal]:
        async with UnitOfWork(self.sessionmaker) as uow:
            query = sa.select(allocation_proposals).order_by(allocation_proposals.c.proposed_at.desc())
            return [_proposal(r) for r in (await uow.session.execute(query)).mappings()]

    async def check(self) -> Proposal | None:
        """Value the targeted accounts now; propose one transfer when a share left its band and none is open.
        Returns the open proposal (new or earlier), or None when every share is inside its band."""
        targets = await self.targets()
        now = self.clock()
        async with UnitOfWork(self.sessionmaker) as uow:
            uow.after_commit(self.on_commit)
            session = uow.session
            await session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(AUDIT_CHAIN))))
            open_now = await session.execute(
                sa.select(allocation_proposals).where(allocation_proposals.c.status == PROPOSED)
            )
            existing = open_now.mappings().first()
            if existing is not None:
                return _proposal(existing)
            unsettled = (await session.execute(_unsettled(now - self.settle))).mappings().first()
            if unsettled is not None:
                return _proposal(unsettled)  # approved, its move not in the read model yet: the NAVs are stale
            # Valued only now, after the read model was seen to hold every approved move (never before it).
            navs = {t.account_id: await self.queries.nav_at(t.account_id, self.clock()) for t in targets}
            planned = rebalance(targets, navs)
            if planned is None:
                return None
            source, destination, amount, worst, share = planned
            proposal = Proposal(
                f"alloc-{uuid.uuid4().hex}",
                source,
                destination,
                self.queries.quote,
                amount,
                worst.account_id,
                share,
                worst.target_share,
                PROPOSED,
            )
            await session.execute(
                pg_insert(allocation_proposals).values(
                    proposal_id=proposal.proposal_id,
                    from_account_id=source,
                    to_account_id=destination,
                    asset=proposal.asset,
                    amount=amount,
                    drifted_account_id=worst.account_id,
                    share=share,
                    target_share=worst.target_share,
                    status=PROPOSED,
                    proposed_at=now,
                )
            )
            request = CapitalTransferApprovalRequested(
                subject_type=SubjectType.CAPITAL_TRANSFER,
                subject_id=proposal.proposal_id,
                account_id=source,
                requested_by=ALLOCATOR_ACTOR,
                to_account_id=destination,
                asset=proposal.asset,
                amount=amount,
                drifted_account_id=worst.account_id,
                share=share.quantize(Decimal("0.000001")),
                target_share=worst.target_share,
                band=worst.band,
                proposed_at=now,
            )
            envelope = new_envelope(request, producer="reports", aggregate_id=proposal.proposal_id, now=now)
            await add_to_outbox(session, self.tables, topic=self.topic, envelope=envelope, key=proposal.proposal_id)
            await audit_append(
                session,
                actor=ALLOCATOR_ACTOR,
                action="allocation.proposed",
                target=f"{source}->{destination}",
                details={
                    "proposal_id": proposal.proposal_id,
                    "amount": format_decimal(amount),
                    "asset": proposal.asset,
                },
                chain=AUDIT_CHAIN,
            )
        return proposal

    async def on_decision(self, session: AsyncSession, decided: ApprovalDecided) -> None:
        """Close the proposal the directors decided (in the consumer's transaction); others are ignored."""
        if decided.subject_type != SubjectType.CAPITAL_TRANSFER:
            return
        await session.execute(
            sa.update(allocation_proposals)
            .where(allocation_proposals.c.proposal_id == decided.subject_id, allocation_proposals.c.status == PROPOSED)
            .values(status=decided.decision.value, decided_at=decided.decided_at)
        )


def _unsettled(since: datetime) -> sa.Select[Any]:
    """Proposals approved after `since` whose transfer the read model has not fully seen: both cash flows, and a
    balance of each account in the asset changed at or after the transfer."""
    p = allocation_proposals
    flows = sa.select(sa.func.count()).where(
        cash_flows.c.reference == p.c.proposal_id, cash_flows.c.kind.in_(("transfer_out", "transfer_in"))
    )
    moved_after = sa.select(sa.func.min(cash_flows.c.occurred_at)).where(cash_flows.c.reference == p.c.proposal_id)
    balanced = sa.select(sa.func.count(sa.distinct(balance_history.c.account_id))).where(
        balance_history.c.account_id.in_([p.c.from_account_id, p.c.to_account_id]),
        balance_history.c.asset == p.c.asset,
        balance_history.c.changed_at >= moved_after.scalar_subquery(),
    )
    return (
        sa.select(p)
        .where(p.c.status == "approved", p.c.decided_at > since)
        .where(sa.or_(flows.scalar_subquery() < 2, balanced.scalar_subquery() < 2))
        .order_by(p.c.decided_at.desc())
        .limit(1)
    )


def _proposal(row: sa.RowMapping) -> Proposal:
    return Proposal(
        row["proposal_id"],
        row["from_account_id"],
        row["to_account_id"],
        row["asset"],
        row["amount"],
        row["drifted_account_id"],
        row["share"],
        row["target_share"],
        row["status"],
    )
