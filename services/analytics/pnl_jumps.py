"""PnL jumps: an account's mark-to-market PnL in one symbol moving more than `pnl_jump_quote` (an amount in the
quote asset) within `pnl_jump_window`.

Each `OrderFilled` (from the OMS's order events, through `analytics.inbox`) is booked on the account's average-cost
position in its symbol (`shared.domain.pnl.Position`: the reports service's definition of PnL). The PnL (realized
plus unrealized, less fees) is then valued at the stored mark of the fill's instant (the newest book mid or trade
of the symbol, any venue, at or before it), and again by every anomaly scan at its own instant for each open
position, so a price move without a fill is seen too. Each valuation is a point; the rule compares it with every
point of the window before it: when the largest difference is beyond `pnl_jump_quote`, a jump episode opens and is
reported once (magnitude: that difference); it closes at the first valuation whose window holds no such move.
An open position with no stored mark is not valued (no verdict, never a guess). Points older than two windows are
pruned by the scan. The venue is `oms` (the events name none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from services.analytics import repository
from services.analytics.anomalies import ORDER_VENUE, anomaly
from shared.clock import utc_now
from shared.contracts.analytics import AnomalyDetected, AnomalyKind
from shared.contracts.orders import OrderFilled
from shared.domain.pnl import Fill, Position

_CENTS = Decimal("0.01")
_MAX_AMOUNT = Decimal(10) ** 15


@dataclass(frozen=True, slots=True)
class PnlJumpPolicy:
    """What counts as a PnL jump."""

    quote: Decimal = Decimal(1_000)
    window: timedelta = timedelta(minutes=5)


def biggest_move(points: Sequence[tuple[datetime, Decimal]], pnl: Decimal) -> tuple[datetime, Decimal] | None:
    """The earlier point `pnl` differs from the most (ties: the earliest), or None without points."""
    best: tuple[datetime, Decimal] | None = None
    for at, value in points:
        if best is None or abs(pnl - value) > abs(pnl - best[1]):
            best = (at, value)
    return best


class PnlJumps:
    """Positions, PnL points and jump episodes of the analytics service (see the module docstring)."""

    def __init__(self, policy: PnlJumpPolicy) -> None:
        self._policy = policy

    async def on_fill(self, session: AsyncSession, fill: OrderFilled) -> list[AnomalyDetected]:
        """Book the fill on the account's position and value it at the fill's instant."""
        account, symbol = fill.account_id, fill.symbol
        stored = await repository.pnl_position(session, account, symbol)
        position = Position(**stored) if stored is not None else Position()
        position.apply(
            Fill(symbol, fill.side, Decimal(fill.quantity), Decimal(fill.price), Decimal(fill.fee), fill.occurred_at)
        )
        await repository.save_pnl_position(session, account, symbol, asdict(position))
        return await self._value(session, account, symbol, position, fill.occurred_at)

    async def scan(self, session: AsyncSession, now: datetime) -> list[AnomalyDetected]:
        """Value every open position at `now`; prune the points older than two windows."""
        await repository.prune_pnl_points(session, now - 2 * self._policy.window)
        found: list[AnomalyDetected] = []
        for account, symbol in await repository.open_positions(session):
            stored = await repository.pnl_position(session, account, symbol)
            if stored is not None:
                found += await self._value(session, account, symbol, Position(**stored), now)
        return found

    async def _value(
        self, session: AsyncSession, account: str, symbol: str, position: Position, at: datetime
    ) -> list[AnomalyDetected]:
        mark = await repository.mark_at(session, symbol, at)
        pnl = position.marked_pnl(None if mark is None else mark[0])
        if pnl is None:
            return []
        window = self._policy.window
        points = await repository.pnl_points_within(session, account, symbol, at - window, at)
        await repository.add_pnl_point(session, account, symbol, at, pnl)
        reference = biggest_move([p for p in points if p[0] < at], pnl)
        if reference is None or abs(pnl - reference[1]) <= self._policy.quote:
            await repository.close_pnl_jump_episode(session, account, symbol)
            return []
        if not await repository.open_pnl_jump_episode(session, account, symbol, at):
            return []
        move = pnl - reference[1]
        priced = "flat" if mark is None else f"{position.quantity} at {mark[1]} {mark[0]} ({mark[2].isoformat()})"
        detail = (
            f"PnL {pnl:.2f} moved {move:+.2f} within {int(window.total_seconds() // 60)} min "
            f"(from {reference[1]:.2f} at {reference[0].isoformat()}; threshold {self._policy.quote}); "
            f"position {priced}"
        )
        magnitude = min(abs(move), _MAX_AMOUNT).quantize(_CENTS)
        return [anomaly(AnomalyKind.PNL_JUMP, ORDER_VENUE, symbol, at, utc_now(), magnitude, detail, account)]
