"""Background work of the reports service: the audit anchoring job, and the consumers that keep the read model
(`reports.*`) from OMS fills, balances and cash flows and from market data, each idempotent through `reports.inbox`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from services.reports.adapters import ReportsAdapters, reports_adapters
from services.reports.config import ReportsSettings
from services.reports.errors import PriceMissing
from shared.app_factory import BackgroundWorker, ServiceRuntime, run_consumer
from shared.audit.anchors import AnchorPolicy, AnchorSettings, anchor_due_chains, load_signer
from shared.config import ConfigurationError
from shared.contracts.approvals import ApprovalDecided
from shared.contracts.balances import BalanceChanged
from shared.contracts.cashflows import CashFlowRecorded
from shared.contracts.orders import OrderFilled
from shared.contracts.registry import parse_as, parse_message
from shared.db import UnitOfWork
from shared.events import Envelope
from shared.marketdata import MarketDataError, decode_marketdata
from shared.observability.logging import get_logger

log = get_logger(__name__)


def anchoring_worker(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    """Every `audit_anchor_poll_s`, sign and publish an anchor for each chain that is due (N entries or T seconds)."""

    async def run() -> None:
        settings = runtime.settings
        if not isinstance(settings, AnchorSettings):
            raise ConfigurationError("the anchoring job needs AnchorSettings (AETHER_AUDIT_ANCHOR_*)")
        signer = load_signer(settings)  # fails loudly (and is retried by the supervisor) without a key
        policy = AnchorPolicy(every_entries=settings.audit_anchor_every_entries, every_s=settings.audit_anchor_every_s)
        interval_s = min(settings.audit_anchor_poll_s, settings.audit_anchor_every_s)
        while not runtime.stop_event.is_set():
            async with UnitOfWork(runtime.sessionmaker) as uow:
                anchors = await anchor_due_chains(uow.session, signer, runtime.tables, policy)
            if anchors:
                log.info("audit_anchored", chains=len(anchors), newest=max(a.length for a in anchors))
                runtime.relay.wake()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.stop_event.wait(), timeout=interval_s)

    return run


def allocation_worker(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    """Every `allocation_check_interval_s`, the allocator's drift check (a proposal when a share left its band)."""

    async def run() -> None:
        reports = reports_adapters(runtime)
        interval_s = reports.settings.allocation_check_interval_s
        if interval_s <= 0:
            return
        while not runtime.stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.stop_event.wait(), timeout=interval_s)
            if runtime.stop_event.is_set():
                return
            try:
                proposal = await reports.allocator.check()
            except PriceMissing as exc:  # no NAV is guessed: the next check tries again
                log.warning("allocation_check_unpriced", error=exc.message)
                continue
            if proposal is not None:
                log.info("allocation_proposal_open", proposal_id=proposal.proposal_id, status=proposal.status)

    return run


async def handle_order_event(reports: ReportsAdapters, session: AsyncSession, envelope: Envelope) -> None:
    """`OrderFilled` becomes a row of `reports.fills`; the other order events carry nothing a report needs."""
    message = parse_message(envelope)
    if isinstance(message, OrderFilled):
        await reports.writer.on_fill(session, message)


async def handle_balance_event(reports: ReportsAdapters, session: AsyncSession, envelope: Envelope) -> None:
    """`BalanceChanged`: one more version in `reports.balance_history`."""
    await reports.writer.on_balance(session, parse_as(BalanceChanged, envelope))


async def handle_cash_flow(reports: ReportsAdapters, session: AsyncSession, envelope: Envelope) -> None:
    """`CashFlowRecorded`: a deposit, withdrawal or transfer in `reports.cash_flows`."""
    await reports.writer.on_cash_flow(session, parse_as(CashFlowRecorded, envelope))


async def handle_decision(reports: ReportsAdapters, session: AsyncSession, envelope: Envelope) -> None:
    """`ApprovalDecided` of a capital transfer closes its allocation proposal; other decisions are not ours."""
    if envelope.type == ApprovalDecided.TYPE:
        await reports.allocator.on_decision(session, parse_as(ApprovalDecided, envelope))


async def handle_marketdata(reports: ReportsAdapters, session: AsyncSession, envelope: Envelope) -> None:
    """Book snapshots and deltas (mid) and trades (when no book is known) become marks."""
    try:
        message = decode_marketdata(envelope)
    except MarketDataError as exc:
        log.warning("reports_marketdata_skipped", error=str(exc)[:300])
        return
    await reports.writer.on_marketdata(session, message)


def _consumer(
    name: str,
    topics: Callable[[ReportsSettings], list[str]],
    handler: Callable[[ReportsAdapters, AsyncSession, Envelope], Awaitable[None]],
) -> BackgroundWorker:
    def build(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            reports = reports_adapters(runtime)
            await run_consumer(
                runtime,
                name=f"reports.{name}",
                topics=topics(reports.settings),
                handler=lambda session, envelope: handler(reports, session, envelope),
            )

        return run

    return build


# (name, worker factory) pairs started by the app's lifespan.
WORKERS: Sequence[tuple[str, BackgroundWorker]] = (
    ("audit-anchoring", anchoring_worker),
    ("allocation-check", allocation_worker),
    ("order-events", _consumer("order-events", lambda s: [s.order_events_topic], handle_order_event)),
    ("balance-events", _consumer("balance-events", lambda s: [s.balance_events_topic], handle_balance_event)),
    ("cash-flows", _consumer("cash-flows", lambda s: [s.cashflow_events_topic], handle_cash_flow)),
    ("approval-decisions", _consumer("approval-decisions", lambda s: [s.decisions_topic], handle_decision)),
    (
        "marketdata",
        _consumer("marketdata", lambda s: [s.marketdata_book_topic, s.marketdata_trade_topic], handle_marketdata),
    ),
)
