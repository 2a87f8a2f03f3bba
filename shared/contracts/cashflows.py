"""Capital flows as OMS events: `CashFlowRecorded` on `oms.cash-flow-events.v1`, keyed by account id.

A deposit, withdrawal or transfer moves money in or out of an account without being profit or loss; the reports
service keeps them apart from fills to take time-weighted returns. The OMS publishes one in the same transaction
as the ledger change it describes (the `BalanceChanged` of the same instant carries the new balance).
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from shared.contracts.balances import AssetText
from shared.contracts.base import Identifier, Message, PositiveDecimal, Timestamp
from shared.events.topics import OMS_CASHFLOW_EVENTS

__all__ = ["OMS_CASHFLOW_EVENTS", "CashFlowKind", "CashFlowRecorded"]


class CashFlowKind(StrEnum):
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    TRANSFER_IN = "transfer_in"
    TRANSFER_OUT = "transfer_out"

    @property
    def inflow(self) -> bool:
        """True when money comes into the account."""
        return self in (CashFlowKind.DEPOSIT, CashFlowKind.TRANSFER_IN)


class CashFlowRecorded(Message):
    """Money moved in or out of an account; `reference` is unique per (account, kind) (the deposit reference)."""

    TYPE = "CashFlowRecorded"

    account_id: Identifier
    kind: CashFlowKind
    asset: AssetText
    amount: PositiveDecimal
    reference: Identifier
    counterparty_account_id: Identifier | None = None
    occurred_at: Timestamp

    def signed_amount(self) -> Decimal:
        """The amount, negative for money leaving the account."""
        return self.amount if self.kind.inflow else -self.amount
