"""Crediting a paper account: at the venue (only a venue with the `Funding` capability) and in the ledger, once per
reference.

The two sides are one recoverable operation: the deposit is recorded `pending` under its (account, reference) in
the OMS's transaction first; the venue is credited by reference (it credits a reference once); then the ledger is
credited and the deposit turns `applied` in one transaction, with the balance it left. A crash between the steps
leaves a pending deposit, which a repeat of the request or startup reconciliation completes the same way.
"""

from __future__ import annotations

from decimal import Decimal

from services.oms.errors import DepositReferenceConflict, DepositRejected, NotAPaperAccount, VenueUnavailable
from services.oms.ledger_repository import DepositRecord, DepositStatus, LedgerRepository
from services.oms.metrics import VENUE_ERRORS
from services.oms.repository import OmsRepository
from services.oms.use_cases.context import OmsContext
from services.oms.use_cases.publishing import publish_cash_flow, save_ledger
from shared.audit import append as audit_append
from shared.contracts.cashflows import CashFlowKind, CashFlowRecorded
from shared.domain.money import format_decimal
from shared.domain.types import AccountId
from shared.venues.base import Funding, VenueError, VenueNotReady, VenueRejected
from shared.venues.router import account_venue, account_venue_name


class FundPaperAccount:
    """Paper deposits; the account is created on its first deposit."""

    def __init__(self, ctx: OmsContext) -> None:
        self.ctx = ctx

    async def deposit(
        self, account_id: str, asset: str, amount: Decimal, actor: str, *, reference: str
    ) -> DepositRecord:
        """Credit the account at the venue, then in the ledger (journaled and audited), once per reference: a
        repeat answers the first deposit; the same reference for another asset or amount is a conflict."""
        self._funding_venue(account_id)
        venue_name = account_venue_name(self.ctx.venue, account_id)
        async with self.ctx.account_transaction(account_id) as uow:
            repo = OmsRepository(uow.session)
            account = await repo.get_account(account_id)
            if account is not None and account.venue != venue_name:
                raise NotAPaperAccount(f"account {account_id!r} trades on {account.venue}, not on {venue_name}")
            await repo.ensure_account(account_id, venue_name, self.ctx.settings.default_approval_threshold)
            await repo.lock_account(account_id)
            recorded = await LedgerRepository(uow.session).record_deposit(
                account_id, reference, asset, amount, actor, self.ctx.clock()
            )
        if (recorded.asset, recorded.amount) != (asset, amount):
            raise DepositReferenceConflict(
                f"deposit reference {reference!r} was used for {format_decimal(recorded.amount)} {recorded.asset}",
                details={"reference": reference},
            )
        if recorded.status is DepositStatus.APPLIED:
            return recorded
        return await self.complete(recorded, actor)

    async def complete(self, deposit: DepositRecord, actor: str) -> DepositRecord:
        """Credit a recorded deposit at the venue (idempotent by reference), then in the ledger unless it already is."""
        venue = self._funding_venue(deposit.account_id)
        try:
            await venue.deposit(deposit.account_id, deposit.asset, deposit.amount, deposit.reference)
        except VenueRejected as exc:
            async with self.ctx.account_transaction(deposit.account_id) as uow:
                await LedgerRepository(uow.session).forget_pending_deposit(deposit.account_id, deposit.reference)
            raise DepositRejected(exc.code, exc.message) from None
        except VenueError as exc:
            VENUE_ERRORS.labels(operation="deposit", kind=type(exc).__name__).inc()
            raise VenueUnavailable(
                f"the venue did not confirm deposit {deposit.reference!r}: retry with the same reference"
            ) from None
        async with self.ctx.account_transaction(deposit.account_id) as uow:
            await OmsRepository(uow.session).lock_account(deposit.account_id)
            ledger_repo = LedgerRepository(uow.session)
            current = await ledger_repo.find_deposit(deposit.account_id, deposit.reference)
            if current is not None and current.status is DepositStatus.APPLIED:
                return current  # completed meanwhile (a concurrent repeat, or reconciliation)
            now = self.ctx.clock()
            ledger = await ledger_repo.load_ledger(deposit.account_id)
            update = ledger.deposit(deposit.asset, deposit.amount, f"deposit:{deposit.reference}")
            await save_ledger(uow.session, self.ctx.tables, ledger, update, now)
            balance = update.ledger.balance(deposit.asset)
            await ledger_repo.mark_deposit_applied(deposit.account_id, deposit.reference, balance, now)
            await publish_cash_flow(
                uow.session,
                self.ctx.tables,
                CashFlowRecorded(
                    account_id=deposit.account_id,
                    kind=CashFlowKind.DEPOSIT,
                    asset=deposit.asset,
                    amount=deposit.amount,
                    reference=deposit.reference,
                    occurred_at=now,
                ),
            )
            await audit_append(
                uow.session,
                actor=actor,
                action="paper.deposit",
                target=f"{deposit.account_id}/{deposit.asset}",
                details={"amount": format_decimal(deposit.amount), "reference": deposit.reference},
                chain=f"oms:{deposit.account_id}",
            )
        return DepositRecord(
            deposit.account_id, deposit.reference, deposit.asset, deposit.amount, DepositStatus.APPLIED, balance
        )

    async def complete_pending(self, account_id: AccountId, actor: str) -> int:
        """Complete every deposit of the account left pending (a crash or a venue outage mid-way); how many."""
        if not isinstance(account_venue(self.ctx.venue, account_id), Funding):
            return 0
        async with self.ctx.account_transaction(account_id) as uow:
            pending = await LedgerRepository(uow.session).pending_deposits(account_id)
        for deposit in pending:
            await self.complete(deposit, actor)
        return len(pending)

    def _funding_venue(self, account_id: str) -> Funding:
        try:
            venue = account_venue(self.ctx.venue, account_id)
        except VenueNotReady as exc:
            raise NotAPaperAccount(f"deposits are not possible for account {account_id!r}: {exc.reason}") from None
        if not isinstance(venue, Funding):
            raise NotAPaperAccount(f"deposits are not possible on the {venue.name} venue")
        return venue
