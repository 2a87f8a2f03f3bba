"""Crediting a paper account: at the venue (only a venue with the `Funding` capability) and in the ledger."""

from __future__ import annotations

from decimal import Decimal

from services.oms.errors import NotAPaperAccount
from services.oms.ledger_repository import LedgerRepository
from services.oms.repository import OmsRepository
from services.oms.use_cases.context import OmsContext
from services.oms.use_cases.publishing import save_ledger
from shared.audit import append as audit_append
from shared.db import UnitOfWork
from shared.domain.ledger import Ledger
from shared.domain.money import format_decimal
from shared.domain.types import AccountId, Asset
from shared.venues.base import Funding


class FundPaperAccount:
    """Paper deposits; the account is created on its first deposit."""

    def __init__(self, ctx: OmsContext) -> None:
        self.ctx = ctx

    async def deposit(self, account_id: str, asset: str, amount: Decimal, actor: str) -> Ledger:
        """Credit the account at the venue, then in the ledger (journaled and audited)."""
        venue = self.ctx.venue
        if not isinstance(venue, Funding):
            raise NotAPaperAccount(f"deposits are not possible on the {venue.name} venue")
        async with UnitOfWork(self.ctx.sessionmaker) as uow:
            account = await OmsRepository(uow.session).get_account(account_id)
        if account is not None and account.venue != venue.name:
            raise NotAPaperAccount(f"account {account_id!r} trades on {account.venue}, not on {venue.name}")
        await venue.deposit(AccountId(account_id), Asset(asset), amount)
        async with self.ctx.account_transaction(account_id) as uow:
            repo = OmsRepository(uow.session)
            await repo.ensure_account(account_id, venue.name, self.ctx.settings.default_approval_threshold)
            await repo.lock_account(account_id)
            ledger = await LedgerRepository(uow.session).load_ledger(AccountId(account_id))
            update = ledger.deposit(Asset(asset), amount, "paper-deposit")
            await save_ledger(uow.session, self.ctx.tables, ledger, update, self.ctx.clock())
            await audit_append(
                uow.session,
                actor=actor,
                action="paper.deposit",
                target=f"{account_id}/{asset}",
                details={"amount": format_decimal(amount)},
                chain=f"oms:{account_id}",
            )
        return update.ledger
