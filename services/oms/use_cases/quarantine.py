"""Venue fills the OMS cannot apply (an order it does not know, an overfill, a fill the order's state forbids, a fill
the ledger refuses) are set aside in `oms.quarantined_fills`, raw and with the reason, in the transaction that
refused them: once per (venue, trade id), with an audit entry and the `aether_oms_fills_quarantined_total` alert
metric. The fill is then settled as far as the OMS is concerned, so it never blocks the fill cursor,
reconciliation or readiness; an operator resolves it from the table."""

from __future__ import annotations

from datetime import datetime

from pydantic import TypeAdapter

from services.oms.ledger_repository import LedgerRepository
from services.oms.metrics import FILLS_QUARANTINED
from shared.audit import append as audit_append
from shared.db import UnitOfWork
from shared.observability.logging import get_logger
from shared.venues.base import VenueFill

log = get_logger(__name__)

UNKNOWN_ORDER = "unknown_order"
_RAW_FILL = TypeAdapter(VenueFill)


async def quarantine_fill(
    uow: UnitOfWork, venue: str, fill: VenueFill, order_id: str | None, code: str, reason: str, now: datetime
) -> None:
    """Set the refused fill aside (nothing more when it already is); audited, counted once it commits."""
    inserted = await LedgerRepository(uow.session).quarantine_fill(
        {
            "venue": venue,
            "trade_id": fill.trade_id,
            "account_id": fill.account_id,
            "client_order_id": fill.client_order_id,
            "order_id": order_id,
            "reason_code": code,
            "reason": reason,
            "fill": _RAW_FILL.dump_python(fill, mode="json"),
            "quarantined_at": now,
        }
    )
    if not inserted:
        return
    await audit_append(
        uow.session,
        actor=f"venue:{venue}",
        action="fill.quarantined",
        target=f"{fill.account_id}/{fill.trade_id}",
        details={"reason_code": code, "reason": reason, "client_order_id": fill.client_order_id, "order_id": order_id},
        chain=f"oms:{fill.account_id}",
        occurred_at=now,
    )
    uow.after_commit(lambda: FILLS_QUARANTINED.labels(reason=code).inc())
    log.error("fill_quarantined", trade_id=fill.trade_id, account_id=fill.account_id, reason_code=code, reason=reason)
