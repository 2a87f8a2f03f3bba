"""SQL of the OMS's transfers between two of the firm's accounts (`oms.transfers`), in the caller's session."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.oms.tables import transfers
from shared.domain.types import AccountId, Asset

__all__ = ["TransferRecord", "TransferRepository", "TransferStatus"]


class TransferStatus(StrEnum):
    """`awaiting_approval` (an allocation proposal the directors have not approved yet) -> `pending` (approved or
    asked directly; the venue may have moved it) -> `applied` (both ledgers moved); a refusal: `rejected`."""

    AWAITING_APPROVAL = "awaiting_approval"
    PENDING = "pending"
    APPLIED = "applied"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class TransferRecord:
    """A transfer as the OMS recorded it: `pending` until both ledgers moved, then `applied`."""

    reference: str
    from_account_id: AccountId
    to_account_id: AccountId
    asset: Asset
    amount: Decimal
    status: TransferStatus
    requested_by: str

    def terms(self) -> tuple[str, str, str, Decimal]:
        """What a repeat of the reference must ask again: the accounts, asset and amount."""
        return (self.from_account_id, self.to_account_id, self.asset, self.amount)


class TransferRepository:
    """Transfers keyed by reference (the allocation proposal id): recorded once, applied once."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record(self, transfer: TransferRecord, now: datetime) -> TransferRecord:
        """The transfer under its reference: recorded `pending` now, or the one recorded before."""
        await self.session.execute(
            pg_insert(transfers)
            .values(
                reference=transfer.reference,
                from_account_id=transfer.from_account_id,
                to_account_id=transfer.to_account_id,
                asset=transfer.asset,
                amount=transfer.amount,
                status=TransferStatus.PENDING.value,
                requested_by=transfer.requested_by,
                requested_at=now,
            )
            .on_conflict_do_nothing(index_elements=["reference"])
        )
        recorded = await self.find(transfer.reference)
        if recorded is None:  # inserted or already there, in this transaction: never absent
            raise RuntimeError(f"transfer {transfer.reference} vanished")
        return recorded

    async def hold(self, transfer: TransferRecord, payload: Mapping[str, Any], now: datetime) -> bool:
        """Keep a transfer awaiting the directors' approval of `payload`; False when the reference is known."""
        statement = (
            pg_insert(transfers)
            .values(
                reference=transfer.reference,
                from_account_id=transfer.from_account_id,
                to_account_id=transfer.to_account_id,
                asset=transfer.asset,
                amount=transfer.amount,
                status=TransferStatus.AWAITING_APPROVAL.value,
                requested_by=transfer.requested_by,
                requested_at=now,
                approval_payload=dict(payload),
            )
            .on_conflict_do_nothing(index_elements=["reference"])
            .returning(transfers.c.reference)
        )
        return (await self.session.execute(statement)).first() is not None

    async def approval_payload(self, reference: str) -> dict[str, Any] | None:
        """The request payload a held transfer waits on (locked for the decision)."""
        query = sa.select(transfers.c.approval_payload).where(transfers.c.reference == reference).with_for_update()
        value = await self.session.scalar(query)
        return None if value is None else dict(value)

    async def set_status(self, reference: str, status: TransferStatus) -> None:
        await self.session.execute(
            sa.update(transfers).where(transfers.c.reference == reference).values(status=status.value)
        )

    async def find(self, reference: str) -> TransferRecord | None:
        row = (await self.session.execute(sa.select(transfers).where(transfers.c.reference == reference))).first()
        return None if row is None else _record(row._mapping)

    async def pending(self, account_id: str) -> list[TransferRecord]:
        """Transfers out of the account left pending (a crash or a venue outage mid-way), oldest first."""
        query = (
            sa.select(transfers)
            .where(transfers.c.from_account_id == account_id, transfers.c.status == TransferStatus.PENDING.value)
            .order_by(transfers.c.requested_at)
        )
        return [_record(row) for row in (await self.session.execute(query)).mappings().all()]

    async def mark_applied(self, reference: str, now: datetime) -> None:
        await self.session.execute(
            sa.update(transfers)
            .where(transfers.c.reference == reference)
            .values(status=TransferStatus.APPLIED.value, applied_at=now)
        )

    async def forget_pending(self, reference: str) -> None:
        """Drop a transfer the venue refused (nothing moved anywhere)."""
        await self.session.execute(
            sa.delete(transfers).where(
                transfers.c.reference == reference, transfers.c.status == TransferStatus.PENDING.value
            )
        )


def _record(row: sa.RowMapping) -> TransferRecord:
    return TransferRecord(
        row["reference"],
        AccountId(row["from_account_id"]),
        AccountId(row["to_account_id"]),
        Asset(row["asset"]),
        row["amount"],
        TransferStatus(row["status"]),
        row["requested_by"],
    )
