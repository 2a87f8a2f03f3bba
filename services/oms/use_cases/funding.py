"""Crediting and debiting a paper account: at the venue (only a venue with the `Funding` / `Withdrawals` capability)
and in the ledger, once per reference.

The two sides are one recoverable operation: the deposit is recorded `pending` under its (account, reference) in
the OMS's transaction first; the venue is credited by reference (it credits a reference once); then the ledger is
credited and the deposit turns `applied` in one transaction, with the balance it left. A crash between the steps
leaves a pending deposit, which a repeat of the request or startup reconciliation completes the same way.

A withdrawal takes the same steps in `oms.withdrawals` (the columns of `oms.deposits`): recorded `pending` only
when the ledger's free balance covers it (reserved money cannot leave), debited at the venue by reference (the
venue checks its own free balance), then debited in the ledger with `CashFlowRecorded` `withdrawal`.
"""

from __future__ import annotations

from decimal import Decimal

from services.oms.errors import (
    AccountNotFound,
    DepositReferenceConflict,
    DepositRejected,
    NotAPaperAccount,
    VenueUnavailable,
    WithdrawalReferenceConflict,
    WithdrawalRejected,
)
from services.oms.ledger_repository import DepositRecord, DepositStatus, LedgerRepository
from services.oms.metrics import VENUE_ERRORS
from services.oms.repository import OmsRepository
from services.oms.tables import withdrawals
from services.oms.use_cases.context import OmsContext
from services.oms.use_cases.publishing import publish_cash_flow, save_ledger
from shared.audit import append as audit_append
from shared.contracts.cashflows import CashFlowKind, CashFlowRecorded
from shared.domain.ledger import LedgerError
from shared.domain.money import format_decimal
from shared.domain.types import AccountId, Asset
from shared.venues.base import Funding, VenueAdapter, VenueError, VenueNotReady, VenueRejected, Withdrawals
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
        """Complete every deposit and withdrawal of the account left pending (a crash or a venue outage mid-way);
        how many."""
        try:
            venue: VenueAdapter | None = account_venue(self.ctx.venue, account_id)
        except VenueNotReady:
            venue = None  # no venue for it: nothing can be completed (reconciliation reports it not ready)
        completed = 0
        if isinstance(venue, Funding):
            async with self.ctx.account_transaction(account_id) as uow:
                pending = await LedgerRepository(uow.session).pending_deposits(account_id)
            for deposit in pending:
                await self.complete(deposit, actor)
            completed += len(pending)
        if isinstance(venue, Withdrawals):
            async with self.ctx.account_transaction(account_id) as uow:
                pending = await LedgerRepository(uow.session).pending_deposits(account_id, table=withdrawals)
            for withdrawal in pending:
                await self.complete_withdrawal(withdrawal, actor)
            completed += len(pending)
        return completed

    async def withdraw(
        self, account_id: str, asset: str, amount: Decimal, actor: str, *, reference: str
    ) -> DepositRecord:
        """Debit the account at the venue, then in the ledger (journaled and audited), once per reference: a
        repeat answers the first withdrawal; another asset or amount under it is a conflict; an amount the free
        balance does not cover moves nothing."""
        self._withdrawals_venue(account_id)
        venue_name = account_venue_name(self.ctx.venue, account_id)
        async with self.ctx.account_transaction(account_id) as uow:
            repo = OmsRepository(uow.session)
            account = await repo.get_account(account_id)
            if account is None:
                raise AccountNotFound(f"account {account_id!r} is unknown to the OMS")
            if account.venue != venue_name:
                raise NotAPaperAccount(f"account {account_id!r} trades on {account.venue}, not on {venue_name}")
            await repo.lock_account(account_id)
            ledgers = LedgerRepository(uow.session)
            recorded = await ledgers.find_deposit(account_id, reference, table=withdrawals)
            if recorded is None:
                try:
                    (await ledgers.load_ledger(AccountId(account_id))).withdraw(Asset(asset), amount)  # the check only
                except LedgerError as exc:
                    raise WithdrawalRejected(exc.code, str(exc)) from None
                recorded = await ledgers.record_deposit(
                    account_id, reference, asset, amount, actor, self.ctx.clock(), table=withdrawals
                )
        if (recorded.asset, recorded.amount) != (asset, amount):
            raise WithdrawalReferenceConflict(
                f"withdrawal reference {reference!r} was used for {format_decimal(recorded.amount)} {recorded.asset}",
                details={"reference": reference},
            )
        if recorded.status is DepositStatus.APPLIED:
            return recorded
        return await self.complete_withdrawal(recorded, actor)

    async def complete_withdrawal(self, withdrawal: DepositRecord, actor: str) -> DepositRecord:
        """Debit a recorded withdrawal at the venue (idempotent by reference), then in the ledger unless it is."""
        account_id, reference = withdrawal.account_id, withdrawal.reference
        venue = self._withdrawals_venue(account_id)
        try:
            await venue.withdraw(account_id, withdrawal.asset, withdrawal.amount, reference)
        except VenueRejected as exc:
            async with self.ctx.account_transaction(account_id) as uow:
                await LedgerRepository(uow.session).forget_pending_deposit(account_id, reference, table=withdrawals)
            raise WithdrawalRejected(exc.code, exc.message) from None
        except VenueError as exc:
            VENUE_ERRORS.labels(operation="withdrawal", kind=type(exc).__name__).inc()
            raise VenueUnavailable(
                f"the venue did not confirm withdrawal {reference!r}: retry with the same reference"
            ) from None
        async with self.ctx.account_transaction(account_id) as uow:
            await OmsRepository(uow.session).lock_account(account_id)
            ledger_repo = LedgerRepository(uow.session)
            current = await ledger_repo.find_deposit(account_id, reference, table=withdrawals)
            if current is not None and current.status is DepositStatus.APPLIED:
                return current  # completed meanwhile (a concurrent repeat, or reconciliation)
            now = self.ctx.clock()
            ledger = await ledger_repo.load_ledger(account_id)
            # The venue debited it already: a ledger that no longer covers it (an order reserved meanwhile) raises
            # here and leaves the withdrawal pending for reconciliation, loud, never half-applied.
            update = ledger.withdraw(withdrawal.asset, withdrawal.amount, f"withdrawal:{reference}")
            await save_ledger(uow.session, self.ctx.tables, ledger, update, now)
            balance = update.ledger.balance(withdrawal.asset)
            await ledger_repo.mark_deposit_applied(account_id, reference, balance, now, table=withdrawals)
            await publish_cash_flow(
                uow.session,
                self.ctx.tables,
                CashFlowRecorded(
                    account_id=account_id,
                    kind=CashFlowKind.WITHDRAWAL,
                    asset=withdrawal.asset,
                    amount=withdrawal.amount,
                    reference=reference,
                    occurred_at=now,
                ),
            )
            await audit_append(
                uow.session,
                actor=actor,
                action="paper.withdrawal",
                target=f"{account_id}/{withdrawal.asset}",
                details={"amount": format_decimal(withdrawal.amount), "reference": reference},
                chain=f"oms:{account_id}",
            )
        return DepositRecord(account_id, reference, withdrawal.asset, withdrawal.amount, DepositStatus.APPLIED, balance)

    def _withdrawals_venue(self, account_id: str) -> Withdrawals:
        try:
            venue = account_venue(self.ctx.venue, account_id)
        except VenueNotReady as exc:
            raise NotAPaperAccount(f"withdrawals are not possible for account {account_id!r}: {exc.reason}") from None
        if not isinstance(venue, Withdrawals):
            raise NotAPaperAccount(f"withdrawals are not possible on the {venue.name} venue")
        return venue

    def _funding_venue(self, account_id: str) -> Funding:
        try:
            venue = account_venue(self.ctx.venue, account_id)
        except VenueNotReady as exc:
            raise NotAPaperAccount(f"deposits are not possible for account {account_id!r}: {exc.reason}") from None
        if not isinstance(venue, Funding):
            raise NotAPaperAccount(f"deposits are not possible on the {venue.name} venue")
        return venue
