"""Moving money between two of the firm's paper accounts: at the venue and in both ledgers, once per reference.

The steps mirror a deposit (`funding.py`): the transfer is recorded `pending` under its reference (after the
source ledger was seen to cover it); the venue moves it by reference (it moves a reference once, debit and
credit in one of its transactions); then, in one OMS transaction holding both accounts, the source ledger is
debited, the destination credited, `CashFlowRecorded` `transfer_out` / `transfer_in` (each naming the other
account) and `BalanceChanged` go to the outbox, both accounts' audit chains record it and the transfer turns
`applied`. A crash between the steps leaves a pending transfer, which a repeat or startup reconciliation
completes the same way (the allocation consumer retries it). The reference is the allocation proposal id, so an approval redelivered moves nothing
twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from services.oms.errors import (
    AccountNotFound,
    NotAPaperAccount,
    TransferReferenceConflict,
    TransferRejected,
    VenueUnavailable,
)
from services.oms.ledger_repository import LedgerRepository
from services.oms.metrics import VENUE_ERRORS
from services.oms.repository import OmsRepository
from services.oms.transfer_repository import TransferRecord, TransferRepository, TransferStatus
from services.oms.use_cases.context import OmsContext
from services.oms.use_cases.publishing import publish_cash_flow, save_ledger
from shared.audit import append as audit_append
from shared.contracts.approvals import (
    ApprovalDecided,
    ApprovalDecision,
    CapitalTransferApprovalRequested,
    approval_payload_hash,
)
from shared.contracts.base import outbox_payload
from shared.contracts.cashflows import CashFlowKind, CashFlowRecorded
from shared.db import UnitOfWork
from shared.domain.ledger import LedgerError
from shared.domain.money import format_decimal
from shared.domain.types import AccountId, Asset
from shared.observability.logging import get_logger
from shared.venues.base import Transfers, VenueError, VenueNotReady, VenueRejected
from shared.venues.router import account_venue_name

log = get_logger(__name__)


class TransferBetweenAccounts:
    """Transfers between two existing paper accounts of the OMS (the capital allocator's approved proposals)."""

    def __init__(self, ctx: OmsContext) -> None:
        self.ctx = ctx

    async def transfer(
        self,
        source: str,
        destination: str,
        asset: str,
        amount: Decimal,
        actor: str,
        *,
        reference: str,
    ) -> TransferRecord:
        """Move `amount` of `asset` from `source` to `destination`, once per reference: a repeat answers the
        first transfer; the same reference with other terms is a conflict; an uncovered amount moves nothing."""
        if source == destination:
            raise TransferRejected("same_account", "a transfer needs two different accounts")
        if amount <= 0:
            raise TransferRejected("invalid_amount", f"a transfer must be positive: {format_decimal(amount)}")
        self._funding_venue()
        wanted = TransferRecord(
            reference, AccountId(source), AccountId(destination), Asset(asset), amount, TransferStatus.PENDING, actor
        )
        async with self._both(source, destination) as uow:
            repo = TransferRepository(uow.session)
            recorded = await repo.find(reference)
            if recorded is None:
                await self._check_accounts(uow, wanted)
                recorded = await repo.record(wanted, self.ctx.clock())
        if recorded.terms() != wanted.terms():
            raise TransferReferenceConflict(
                f"transfer reference {reference!r} was used for {format_decimal(recorded.amount)} {recorded.asset}"
                f" from {recorded.from_account_id} to {recorded.to_account_id}",
                details={"reference": reference},
            )
        if recorded.status is TransferStatus.APPLIED:
            return recorded
        if recorded.status is not TransferStatus.PENDING:
            raise TransferRejected("not_approved", f"transfer {reference!r} is {recorded.status.value}")
        return await self.complete(recorded, actor)

    async def hold_request(self, session: AsyncSession, request: CapitalTransferApprovalRequested) -> bool:
        """Keep an allocation proposal's transfer until the directors decide (in the consumer's transaction);
        False for a repeat, or for accounts the OMS does not know (logged: nothing can move for them)."""
        oms = OmsRepository(session)
        for account_id in (request.account_id, request.to_account_id):
            if await oms.get_account(account_id) is None:
                log.warning("capital_transfer_for_unknown_account", proposal=request.subject_id, account=account_id)
                return False
        held = TransferRecord(
            request.subject_id,
            AccountId(request.account_id),
            AccountId(request.to_account_id),
            Asset(request.asset),
            request.amount,
            TransferStatus.AWAITING_APPROVAL,
            request.requested_by,
        )
        return await TransferRepository(session).hold(held, outbox_payload(request), self.ctx.clock())

    async def decide(self, decided: ApprovalDecided, actor: str) -> TransferRecord | None:
        """Approved with the hash of the held payload: the transfer runs (once; a redelivery after it applied
        moves nothing). Rejected, expired, another hash, or not covered any more: `rejected`, nothing moves."""
        reference = decided.subject_id
        async with self.ctx.account_transaction(decided.account_id) as uow:
            repo = TransferRepository(uow.session)
            held = await repo.find(reference)
            if held is None:
                log.warning("capital_transfer_decision_without_request", proposal=reference)
                return None
            if held.status is TransferStatus.AWAITING_APPROVAL:
                payload = await repo.approval_payload(reference)
                outcome = self._outcome(decided, payload)
                if outcome is None:
                    try:
                        await self._check_accounts(uow, held)
                    except (TransferRejected, AccountNotFound, NotAPaperAccount) as exc:
                        outcome = f"not covered at release: {exc}"
                status = TransferStatus.PENDING if outcome is None else TransferStatus.REJECTED
                await repo.set_status(reference, status)
                await audit_append(
                    uow.session,
                    actor=actor,
                    action="paper.transfer_approved" if outcome is None else "paper.transfer_refused",
                    target=f"{held.from_account_id}/{held.asset}",
                    details={"reference": reference, "decision": decided.decision.value, "why": outcome},
                    chain=f"oms:{held.from_account_id}",
                )
                held = replace(held, status=status)
        if held.status is not TransferStatus.PENDING:
            return held
        try:
            return await self.complete(held, actor)
        except TransferRejected as exc:  # the venue refused: final, nothing moved (retrying cannot change it)
            log.warning("capital_transfer_refused_by_venue", proposal=reference, code=exc.code, error=exc.message)
            return None

    @staticmethod
    def _outcome(decided: ApprovalDecided, payload: dict[str, object] | None) -> str | None:
        """Why the decision does not release the transfer (None: approved, for exactly the held payload)."""
        if decided.decision is not ApprovalDecision.APPROVED:
            return f"{decided.decision.value}: {decided.reason or 'by the directors'}"
        if payload is None or approval_payload_hash(payload) != decided.payload_hash:
            return "approval_mismatch: the approved hash is not the hash of the held request"
        return None

    async def complete(self, transfer: TransferRecord, actor: str) -> TransferRecord:
        """Move a recorded transfer at the venue (idempotent by reference), then in both ledgers unless done."""
        venue = self._funding_venue()
        source, destination = transfer.from_account_id, transfer.to_account_id
        try:
            await venue.transfer(source, destination, transfer.asset, transfer.amount, transfer.reference)
        except VenueRejected as exc:
            async with self._both(source, destination) as uow:
                await TransferRepository(uow.session).forget_pending(transfer.reference)
            raise TransferRejected(exc.code, exc.message) from None
        except VenueError as exc:
            VENUE_ERRORS.labels(operation="transfer", kind=type(exc).__name__).inc()
            raise VenueUnavailable(
                f"the venue did not confirm transfer {transfer.reference!r}: retry with the same reference"
            ) from None
        async with self._both(source, destination) as uow:
            repo = TransferRepository(uow.session)
            current = await repo.find(transfer.reference)
            if current is not None and current.status is TransferStatus.APPLIED:
                return current  # completed meanwhile (a concurrent repeat, or reconciliation)
            now = self.ctx.clock()
            ledgers = LedgerRepository(uow.session)
            label = f"transfer:{transfer.reference}"
            before_out = await ledgers.load_ledger(source)
            # The venue moved it already: a ledger that no longer covers it (an order reserved meanwhile) raises
            # here and leaves the transfer pending for reconciliation, loud, never half-applied.
            out = before_out.withdraw(transfer.asset, transfer.amount, label)
            await save_ledger(uow.session, self.ctx.tables, before_out, out, now)
            before_in = await ledgers.load_ledger(destination)
            into = before_in.deposit(transfer.asset, transfer.amount, label)
            await save_ledger(uow.session, self.ctx.tables, before_in, into, now)
            await repo.mark_applied(transfer.reference, now)
            for account, kind, other in (
                (source, CashFlowKind.TRANSFER_OUT, destination),
                (destination, CashFlowKind.TRANSFER_IN, source),
            ):
                await publish_cash_flow(
                    uow.session,
                    self.ctx.tables,
                    CashFlowRecorded(
                        account_id=account,
                        kind=kind,
                        asset=transfer.asset,
                        amount=transfer.amount,
                        reference=transfer.reference,
                        counterparty_account_id=other,
                        occurred_at=now,
                    ),
                )
                await audit_append(
                    uow.session,
                    actor=actor,
                    action=f"paper.{kind.value}",
                    target=f"{account}/{transfer.asset}",
                    details={
                        "amount": format_decimal(transfer.amount),
                        "reference": transfer.reference,
                        "counterparty": other,
                    },
                    chain=f"oms:{account}",
                )
        return TransferRecord(
            transfer.reference,
            source,
            destination,
            transfer.asset,
            transfer.amount,
            TransferStatus.APPLIED,
            transfer.requested_by,
        )

    async def _check_accounts(self, uow: UnitOfWork, wanted: TransferRecord) -> None:
        """Both accounts on this (funded) venue, the source's free balance covering the amount."""
        oms = OmsRepository(uow.session)
        for account_id in (wanted.from_account_id, wanted.to_account_id):
            account = await oms.get_account(account_id)
            if account is None:
                raise AccountNotFound(f"account {account_id!r} is unknown to the OMS")
            try:
                venue_name = account_venue_name(self.ctx.venue, account_id)
            except VenueNotReady as exc:
                raise NotAPaperAccount(f"account {account_id!r} cannot move money: {exc.reason}") from None
            if account.venue != venue_name:
                raise NotAPaperAccount(f"account {account_id!r} trades on {account.venue}, not on {venue_name}")
        ledger = await LedgerRepository(uow.session).load_ledger(wanted.from_account_id)
        try:
            ledger.withdraw(wanted.asset, wanted.amount)  # only the check: nothing is saved here
        except LedgerError as exc:
            raise TransferRejected(exc.code, str(exc)) from None

    @asynccontextmanager
    async def _both(self, first: str, second: str) -> AsyncIterator[UnitOfWork]:
        """One unit of work holding both accounts (their turns in this process and their rows, sorted)."""
        ordered = sorted({first, second})
        async with AsyncExitStack() as stack:
            for account_id in ordered:
                await stack.enter_async_context(self.ctx.account_gate.hold(account_id))
            uow = await stack.enter_async_context(UnitOfWork(self.ctx.sessionmaker))
            uow.after_commit(self.ctx.on_commit)
            oms = OmsRepository(uow.session)
            for account_id in ordered:
                await oms.lock_account(account_id)
            yield uow

    def _funding_venue(self) -> Transfers:
        venue = self.ctx.venue
        if not isinstance(venue, Transfers):
            raise NotAPaperAccount(f"transfers are not possible on the {venue.name} venue")
        return venue
