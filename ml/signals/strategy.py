"""The signal-follower strategy: `ml.signals.v1` in, `SubmitOrder` commands out on `oms.commands.v1` (through the
`ml` outbox), each carrying the signal's probability as the order's `model_confidence`, so that an account's
approval policy (`model_confidence_min`) sends a low-confidence order to a director."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from shared.contracts.orders import OrderCreate, SubmitOrder
from shared.contracts.registry import follow_up_envelope, parse_as
from shared.contracts.signals import SignalPublished
from shared.domain.types import OrderSide, OrderType
from shared.events import Envelope
from shared.events.outbox import add_to_outbox
from shared.events.tables import EventTables
from shared.events.topics import OMS_COMMANDS

PRODUCER = "ml"


@dataclass(frozen=True)
class FollowerConfig:
    """Which account trades, how much per signal, which labels buy or sell (other labels: no order)."""

    account_id: str
    quantity: Decimal
    sides: dict[str, OrderSide] = field(default_factory=lambda: {"up": OrderSide.BUY, "down": OrderSide.SELL})
    min_probability: Decimal = Decimal(0)  # below this, no order at all (above it, the approval policy decides)


def client_order_id(signal: Envelope) -> str:
    """One order per signal (the OMS is idempotent on it): derived from the signal's event id."""
    return f"ml-{signal.event_id.hex}"


class SignalFollower:
    """Handler of `ml.signals.v1` for `run_consumer`."""

    def __init__(self, tables: EventTables, config: FollowerConfig) -> None:
        self.tables = tables
        self.config = config

    def order_for(self, signal: SignalPublished, envelope: Envelope) -> SubmitOrder | None:
        """The command for one signal, None when its label is not traded or its probability is below the floor."""
        side = self.config.sides.get(signal.label)
        if side is None or signal.probability < self.config.min_probability:
            return None
        order = OrderCreate(
            account_id=self.config.account_id,
            client_order_id=client_order_id(envelope),
            symbol=signal.symbol,
            side=side,
            type=OrderType.MARKET,
            quantity=self.config.quantity,
        )
        return SubmitOrder(order=order, model_confidence=signal.probability)

    async def handle(self, session: AsyncSession, envelope: Envelope) -> None:
        """Queue the order a signal calls for."""
        signal = parse_as(SignalPublished, envelope)
        command = self.order_for(signal, envelope)
        if command is None:
            return
        out = follow_up_envelope(envelope, command, producer=PRODUCER, aggregate_id=self.config.account_id)
        await add_to_outbox(session, self.tables, topic=OMS_COMMANDS, envelope=out, key=self.config.account_id)
