"""Agreeing with the venue: resolve one unresolved order by client id (the resolver's step), and reconcile every
account at start-up against its own venue (fills, order states, orders we never placed, balances), for each venue in
use. Readiness waits for it; an account whose venue cannot take it (no venue, unusable keys) is reported not ready,
and its orders are refused, without holding up the others."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from services.oms.ledger_repository import LedgerRepository
from services.oms.metrics import RECONCILIATION_LAST_SUCCESS, RECONCILIATION_RUNS, VENUE_ERRORS
from services.oms.repository import OmsRepository, StoredOrder, TradingAccount
from services.oms.tables import withdrawals
from services.oms.use_cases.cancellation import CancelOrder
from services.oms.use_cases.context import SYSTEM_ACTOR, OmsContext
from services.oms.use_cases.execution import ExecuteOrders
from services.oms.use_cases.funding import FundPaperAccount
from services.oms.use_cases.order_store import load_order, locked_order, release_reservation, transition
from services.oms.use_cases.pre_trade import Denial
from services.oms.use_cases.publishing import publish_order_events, save_ledger
from shared.audit import append as audit_append
from shared.db import UnitOfWork
from shared.domain.money import format_decimal
from shared.domain.orders import Order
from shared.domain.types import AccountId, Asset, OrderId, OrderStatus
from shared.observability.logging import get_logger
from shared.venues.base import VenueError, VenueNotReady, VenueOrderStatus
from shared.venues.router import VenueRouter, account_venue_name

log = get_logger(__name__)


class ResolveOutcome(StrEnum):
    """What asking the venue about one order came to."""

    SETTLED = "settled"  # terminal or awaiting approval: nothing to ask
    VENUE_UNAVAILABLE = "venue_unavailable"
    CANCEL_RESENT = "cancel_resent"
    APPLIED = "applied"  # the venue's status moved the order
    IN_SYNC = "in_sync"
    RESUBMITTED = "resubmitted"  # the venue never saw it: sent again under the same client order id
    UNKNOWN_TO_VENUE = "unknown_to_venue"  # canceled here: the venue never had it
    DENIED_AT_RELEASE = "denied_at_release"  # never sent: the trading state or a limit refuses it now


class RunKind(StrEnum):
    """Which reconciliation a run was: at start-up, of the accounts not ready then, or the resolver's sweep."""

    STARTUP = "startup"
    NOT_READY = "not_ready"
    SWEEP = "sweep"


class RunOutcome(StrEnum):
    OK = "ok"  # the venue and the books agreed
    DRIFT = "drift"  # they did not: repaired
    ERROR = "error"  # some account or order could not be checked


# What a resolved order's outcome says about the run: the venue and our books disagreed, or it could not be asked.
DRIFT_OUTCOMES = frozenset(
    {
        ResolveOutcome.APPLIED,
        ResolveOutcome.RESUBMITTED,
        ResolveOutcome.UNKNOWN_TO_VENUE,
        ResolveOutcome.DENIED_AT_RELEASE,
        ResolveOutcome.CANCEL_RESENT,
    }
)


def record_run(kind: RunKind, outcome: RunOutcome) -> None:
    """Count one reconciliation run; a completed one (ok or drift) is the kind's last success."""
    RECONCILIATION_RUNS.labels(kind.value, outcome.value).inc()
    if outcome is not RunOutcome.ERROR:
        RECONCILIATION_LAST_SUCCESS.labels(kind.value).set_to_current_time()


def sweep_outcome(outcomes: list[ResolveOutcome]) -> RunOutcome:
    """The outcome of a resolver sweep from its orders' outcomes."""
    if ResolveOutcome.VENUE_UNAVAILABLE in outcomes:
        return RunOutcome.ERROR
    return RunOutcome.DRIFT if DRIFT_OUTCOMES.intersection(outcomes) else RunOutcome.OK


BALANCE_READ_ATTEMPTS = 3  # venue balance snapshots tried per account before its balances wait for the next reconcile


class ReconcileIncomplete(RuntimeError):
    """Some accounts could not be reconciled; the others were."""


@dataclass
class ReconcileReport:
    """What startup reconciliation repaired, per kind."""

    fills_applied: int = 0
    statuses_applied: int = 0
    resubmitted: int = 0
    unknown_to_venue: int = 0
    denied_at_release: int = 0
    external_canceled: int = 0
    balance_adjustments: int = 0
    deposits_completed: int = 0
    accounts_by_venue: dict[str, int] = field(default_factory=dict)  # accounts reconciled, per venue
    not_ready: dict[str, str] = field(default_factory=dict)  # account -> why its venue cannot take it now
    details: list[str] = field(default_factory=list)

    def drifted(self) -> bool:
        """Whether the run repaired anything (fills, statuses, orders, balances)."""
        repairs = (
            self.fills_applied,
            self.statuses_applied,
            self.resubmitted,
            self.unknown_to_venue,
            self.denied_at_release,
            self.external_canceled,
            self.balance_adjustments,
        )
        return any(repairs)

    def count(self, outcome: ResolveOutcome) -> None:
        """Count one resolved order."""
        match outcome:
            case ResolveOutcome.APPLIED:
                self.statuses_applied += 1
            case ResolveOutcome.RESUBMITTED:
                self.resubmitted += 1
            case ResolveOutcome.UNKNOWN_TO_VENUE:
                self.unknown_to_venue += 1
            case ResolveOutcome.DENIED_AT_RELEASE:
                self.denied_at_release += 1
            case (
                ResolveOutcome.SETTLED
                | ResolveOutcome.VENUE_UNAVAILABLE
                | ResolveOutcome.CANCEL_RESENT
                | ResolveOutcome.IN_SYNC
            ):
                pass


Send = Callable[[OrderId], Awaitable[Order | None]]
ReleaseCheck = Callable[[OmsRepository, StoredOrder], Awaitable[Denial | None]]
Resolve = Callable[..., Awaitable[ResolveOutcome]]


class ResolveOrder:
    """Ask the venue about one unresolved order by client id and apply the answer; never a new client id."""

    def __init__(
        self,
        ctx: OmsContext,
        execution: ExecuteOrders,
        cancellation: CancelOrder,
        send: Send,
        release_check: ReleaseCheck,
    ) -> None:
        self.ctx = ctx
        self.execution = execution
        self.cancellation = cancellation
        self.send = send
        self.release_check = release_check

    async def _denied_at_release(self, order_id: OrderId) -> bool:
        """Run the release check on a SUBMITTED order the venue has never seen; denied: it is canceled with the
        check's code as the reason (recorded and audited) and its reservation released."""
        async with UnitOfWork(self.ctx.sessionmaker) as uow:
            uow.after_commit(self.ctx.on_commit)
            repo = OmsRepository(uow.session)
            stored = await locked_order(repo, order_id)
            if stored.order.status is not OrderStatus.SUBMITTED:
                return False
            denial = await self.release_check(repo, stored)
            if denial is None:
                return False
            now = self.ctx.clock()
            order, events = stored.order.cancel(denial.reason, now)
            await release_reservation(uow.session, self.ctx.tables, order, now)
            await repo.save(order, events)
            await publish_order_events(uow.session, self.ctx.tables, order, events, SYSTEM_ACTOR, exits=stored.exits)
        log.warning("resubmit_denied_at_release", order_id=order_id, code=denial.code)
        return True

    async def resolve(self, order_id: OrderId, *, at_startup: bool = False) -> ResolveOutcome:
        """Query the venue by client id and apply what it says."""
        order = (await load_order(self.ctx, order_id)).order
        if order.is_terminal or order.status is OrderStatus.PENDING_APPROVAL:
            return ResolveOutcome.SETTLED
        try:
            seen = await self.ctx.venue.query(order.account_id, order.client_order_id)
        except VenueError as exc:
            VENUE_ERRORS.labels(operation="query", kind=type(exc).__name__).inc()
            return ResolveOutcome.VENUE_UNAVAILABLE
        if seen is None:
            return await self._unknown_to_venue(order, at_startup=at_startup)
        if seen.filled_quantity > order.filled_quantity:
            await self.execution.catch_up_fills(order.account_id)
        if seen.status is VenueOrderStatus.OPEN and order.status is OrderStatus.PENDING_CANCEL:
            await self.cancellation.send_cancel(order)
            return ResolveOutcome.CANCEL_RESENT
        changed = await self.execution.apply_status(seen)
        return ResolveOutcome.APPLIED if changed else ResolveOutcome.IN_SYNC

    async def _unknown_to_venue(self, order: Order, *, at_startup: bool) -> ResolveOutcome:
        if order.status is OrderStatus.SUBMITTED:
            # The submit never reached the venue: send it again under the same client order id, if the trading
            # state and limits as they are now still let it go (R12).
            if await self._denied_at_release(order.id):
                return ResolveOutcome.DENIED_AT_RELEASE
            await self.send(order.id)
            return ResolveOutcome.RESUBMITTED
        if order.status is OrderStatus.PENDING_CANCEL or at_startup:
            await transition(self.ctx, order.id, lambda o, now: o.cancel("unknown_to_venue", now), SYSTEM_ACTOR)
            return ResolveOutcome.UNKNOWN_TO_VENUE
        return ResolveOutcome.IN_SYNC


class ReconcileAccounts:
    """Startup reconciliation of every account with the venue: fills, order states, orphans, balances."""

    def __init__(self, ctx: OmsContext, execution: ExecuteOrders, funding: FundPaperAccount, resolve: Resolve) -> None:
        self.ctx = ctx
        self.execution = execution
        self.funding = funding
        self.resolve = resolve

    async def reconcile(self) -> ReconcileReport:
        """Every account against its venue; ReconcileIncomplete when some could not be reconciled."""
        try:
            report = await self._reconcile_all()
        except Exception:
            record_run(RunKind.STARTUP, RunOutcome.ERROR)
            raise
        record_run(RunKind.STARTUP, RunOutcome.DRIFT if report.drifted() else RunOutcome.OK)
        return report

    async def _reconcile_all(self) -> ReconcileReport:
        report = ReconcileReport()
        routes = self.ctx.venue.routes if isinstance(self.ctx.venue, VenueRouter) else {}
        async with UnitOfWork(self.ctx.sessionmaker) as uow:
            repo = OmsRepository(uow.session)
            for account_id, routed in sorted(routes.items()):  # a routed account exists before it first trades
                await repo.ensure_account(account_id, routed, self.ctx.settings.default_approval_threshold)
            accounts = await repo.list_accounts()
        failed: list[str] = []
        for account in accounts:
            await self._reconcile_known(account, report, failed)
        counts = {k: v for k, v in report.__dict__.items() if k not in ("details", "not_ready", "accounts_by_venue")}
        log.info("reconciled", failed=len(failed), not_ready=len(report.not_ready), **counts)
        if failed:
            # Readiness stays red and the reconciler retries: trading on an unreconciled account is unsafe.
            raise ReconcileIncomplete(f"{len(failed)} account(s) could not be reconciled: {', '.join(failed[:5])}")
        return report

    async def reconcile_not_ready(self) -> ReconcileReport:
        """Try again the accounts that were not ready (keys mounted since, say): each one reconciled now may trade."""
        report = ReconcileReport()
        waiting = set(self.ctx.not_ready)
        if not waiting:
            return report
        async with UnitOfWork(self.ctx.sessionmaker) as uow:
            accounts = [a for a in await OmsRepository(uow.session).list_accounts() if a.account_id in waiting]
        failed: list[str] = []
        for account in accounts:
            await self._reconcile_known(account, report, failed)
        if report.accounts_by_venue:
            log.info("reconciled_once_ready", accounts=sum(report.accounts_by_venue.values()), failed=len(failed))
        outcome = RunOutcome.ERROR if failed else RunOutcome.DRIFT if report.drifted() else RunOutcome.OK
        record_run(RunKind.NOT_READY, outcome)
        return report

    async def _reconcile_known(self, account: TradingAccount, report: ReconcileReport, failed: list[str]) -> None:
        """Reconcile one account against its venue; one that cannot be is noted not ready (refused until it is)."""
        try:
            venue_name = account_venue_name(self.ctx.venue, account.account_id)
        except VenueNotReady as exc:
            self._not_ready(report, account.account_id, exc.reason)
            return
        if account.venue != venue_name:
            if isinstance(self.ctx.venue, VenueRouter):
                reason = f"routed to {venue_name}, its books are kept for {account.venue}"
                self._not_ready(report, account.account_id, reason)
            return
        try:
            await self._reconcile_account(AccountId(account.account_id), report)
        except VenueNotReady as exc:  # its keys are missing or unusable: refused until they are, others go on
            self._not_ready(report, account.account_id, exc.reason)
        except Exception as exc:
            log.error(
                "reconcile_account_failed",
                account_id=account.account_id,
                error_type=type(exc).__name__,
                error=str(exc)[:300],
            )
            failed.append(account.account_id)
        else:
            report.accounts_by_venue[venue_name] = report.accounts_by_venue.get(venue_name, 0) + 1
            self.ctx.not_ready.pop(account.account_id, None)

    def _not_ready(self, report: ReconcileReport, account_id: str, reason: str) -> None:
        if self.ctx.not_ready.get(account_id) != reason:
            log.warning("reconcile_account_not_ready", account_id=account_id, reason=reason)
        self.ctx.not_ready[account_id] = reason
        report.not_ready[account_id] = reason
        report.details.append(f"{account_id} not ready: {reason}")

    async def _reconcile_account(self, account_id: AccountId, report: ReconcileReport) -> None:
        report.deposits_completed += await self.funding.complete_pending(account_id, SYSTEM_ACTOR)
        report.fills_applied += await self.execution.catch_up_fills(account_id)
        async with UnitOfWork(self.ctx.sessionmaker) as uow:
            unresolved = await OmsRepository(uow.session).unresolved_orders(account_id)
        for order_id in unresolved:
            report.count(await self.resolve(OrderId(order_id), at_startup=True))
        report.fills_applied += await self.execution.catch_up_fills(account_id)
        report.external_canceled += await self._cancel_external(account_id)
        report.balance_adjustments += await self._reconcile_balances(account_id, report)

    async def _cancel_external(self, account_id: AccountId) -> int:
        """Orders open at the venue that we never placed are canceled there (and audited)."""
        venue = self.ctx.venue
        # The venue first, then our orders: an order row commits before its submit leaves (placement), so every
        # order another OMS process placed meanwhile is in `ours` when read second (read first, it would be missing
        # and that process's order canceled as external).
        open_at_venue = await venue.open_orders(account_id)
        async with UnitOfWork(self.ctx.sessionmaker) as uow:
            ours = await OmsRepository(uow.session).client_order_ids(account_id)
        canceled = 0
        for venue_order in open_at_venue:
            if venue_order.client_order_id in ours:
                continue
            await venue.cancel(account_id, venue_order.client_order_id)
            async with UnitOfWork(self.ctx.sessionmaker) as uow:
                await audit_append(
                    uow.session,
                    actor=SYSTEM_ACTOR,
                    action="order.external_canceled",
                    target=f"{account_id}/{venue_order.client_order_id}",
                    details={
                        "venue": account_venue_name(venue, account_id),
                        "venue_order_id": venue_order.venue_order_id,
                    },
                    chain=f"oms:{account_id}",
                )
            canceled += 1
        return canceled

    async def _reconcile_balances(self, account_id: AccountId, report: ReconcileReport) -> int:
        """Align ledger totals with the venue's (the venue holds the money); each adjustment is journaled and audited.

        Only a venue snapshot that describes the fills the OMS has settled is compared: a fill the venue has
        committed and the OMS has not applied yet is not drift (adjusting for it, then applying it, would count it
        twice). Such fills are caught up and the balances read again; if fills keep arriving, the account's
        balances wait for the next reconcile.
        """
        for _ in range(BALANCE_READ_ATTEMPTS):
            async with self.ctx.account_transaction(account_id) as uow:
                repo = OmsRepository(uow.session)
                await repo.lock_account(account_id)
                account = await repo.get_account(account_id)
                cursor = 0 if account is None else account.fill_cursor
                venue_totals = await self._settled_venue_totals(uow.session, account_id, cursor)
                if venue_totals is not None:
                    return await self._align(uow.session, account_id, venue_totals, report)
            report.fills_applied += await self.execution.catch_up_fills(account_id)
        log.warning("balances_unsettled", account_id=account_id, attempts=BALANCE_READ_ATTEMPTS)
        report.details.append(f"{account_id} balances not compared: venue fills kept arriving")
        return 0

    async def _settled_venue_totals(
        self, session: AsyncSession, account_id: AccountId, cursor: int
    ) -> dict[Asset, Decimal] | None:
        """The venue's totals, when no fill committed while they were read and the OMS has settled (applied or
        quarantined) every fill after its cursor; else None."""
        venue = self.ctx.venue
        before = [fill.trade_id for fill in await venue.fills_since(account_id, cursor)]
        totals = {balance.asset: balance.total for balance in await venue.balances(account_id)}
        after = [fill.trade_id for fill in await venue.fills_since(account_id, cursor)]
        if after != before:
            return None
        settled = await LedgerRepository(session).settled_trade_ids(account_venue_name(venue, account_id), after)
        return totals if settled >= set(after) else None

    async def _align(
        self, session: AsyncSession, account_id: AccountId, venue_totals: dict[Asset, Decimal], report: ReconcileReport
    ) -> int:
        ledger_repo = LedgerRepository(session)
        ledger = await ledger_repo.load_ledger(account_id)
        # A deposit or withdrawal on its way (venue moved, ledger not yet) completes on its own: not drift.
        pending = [
            *await ledger_repo.pending_deposits(account_id),
            *await ledger_repo.pending_deposits(account_id, table=withdrawals),
        ]
        in_flight = {flow.asset for flow in pending}
        adjustments = 0
        for asset in sorted((set(venue_totals) | set(ledger.balances)) - in_flight):
            drift = venue_totals.get(asset, Decimal(0)) - ledger.balance(asset).total
            if drift == 0:
                continue
            update = (
                ledger.deposit(asset, drift, "reconcile") if drift > 0 else ledger.withdraw(asset, -drift, "reconcile")
            )
            await save_ledger(session, self.ctx.tables, ledger, update, self.ctx.clock())
            ledger = update.ledger
            await audit_append(
                session,
                actor=SYSTEM_ACTOR,
                action="balance.reconciled",
                target=f"{account_id}/{asset}",
                details={"drift": format_decimal(drift), "venue": self.ctx.venue.name},
                chain=f"oms:{account_id}",
            )
            report.details.append(f"{account_id} {asset} drift {format_decimal(drift)}")
            adjustments += 1
        return adjustments
