"""Exit brackets' data: the exit levels and policy, the bracket's state, the inputs a step takes and its decisions.

The rules that move a bracket from one state to the next are in `shared.domain.brackets` (`step`); everything
here is a frozen value, so a recorded stream of inputs replays to the same states and decisions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from shared.domain.money import format_decimal, quantize_down

HUNDRED = Decimal(100)
ZERO = Decimal(0)


class LegKind(StrEnum):
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    TRAILING = "trailing"
    TIME_LIMIT = "time_limit"


LEG_CODES = {LegKind.STOP_LOSS: "sl", LegKind.TAKE_PROFIT: "tp", LegKind.TRAILING: "tr", LegKind.TIME_LIMIT: "tl"}


class BracketStatus(StrEnum):
    ARMED = "armed"  # legs watched, the take-profit may rest
    EXITING = "exiting"  # a trigger fired: cancel what rests, then sell at market
    CLOSED = "closed"  # nothing left open
    FAILED = "failed"  # exit orders rejected brackets.MAX_EXIT_REJECTIONS times: needs an operator


class ExitOrderState(StrEnum):
    PENDING = "pending"  # command sent, not yet accepted by the OMS
    WORKING = "working"
    CANCELING = "canceling"


class ExitOutcome(StrEnum):
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"
    DENIED = "denied"


class BracketError(ValueError):
    """An exit level that contradicts the position (`field` names it)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True, slots=True)
class ExitLevels:
    """Absolute exit levels of one long position (None = leg absent)."""

    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    trailing_distance: Decimal | None = None
    trailing_activation: Decimal | None = None
    time_limit_s: int | None = None

    def check(self, entry_price: Decimal) -> None:
        """Raise BracketError naming the field when a level contradicts a long entry at `entry_price`."""
        if self.stop_loss is not None and self.stop_loss >= entry_price:
            raise BracketError("stop_loss", f"must be below the entry price {format_decimal(entry_price)}")
        if self.take_profit is not None and self.take_profit <= entry_price:
            raise BracketError("take_profit", f"must be above the entry price {format_decimal(entry_price)}")
        if self.trailing_distance is not None and self.trailing_distance <= 0:
            raise BracketError("trailing_distance", "must be positive")
        if self.trailing_distance is not None and self.trailing_distance >= entry_price:
            raise BracketError("trailing_distance", "must be below the entry price")

    def is_empty(self) -> bool:
        return self.stop_loss is None and self.take_profit is None and self.trailing_distance is None


@dataclass(frozen=True, slots=True)
class ExitPolicy:
    """An account's default exits, in percent of the entry price; used when an entry carries no exits."""

    stop_loss_pct: Decimal | None = Decimal(2)
    take_profit_pct: Decimal | None = Decimal(4)
    trailing_distance_pct: Decimal | None = Decimal("1.5")
    trailing_activation_pct: Decimal | None = Decimal(1)
    time_limit_s: int | None = None
    swap_band_pct: Decimal = Decimal("0.5")
    require_explicit_exits: bool = False

    def levels_for(self, entry_price: Decimal, price_increment: Decimal) -> ExitLevels:
        """Absolute levels off `entry_price`, on the price grid (stops rounded down, targets up)."""

        def off(pct: Decimal | None, sign: int) -> Decimal | None:
            if pct is None:
                return None
            raw = entry_price * (HUNDRED + sign * pct) / HUNDRED
            down = quantize_down(raw, price_increment)
            return down if sign < 0 or down == raw else down + price_increment

        distance = None
        if self.trailing_distance_pct is not None:
            distance = max(
                price_increment, quantize_down(entry_price * self.trailing_distance_pct / HUNDRED, price_increment)
            )
        return ExitLevels(
            stop_loss=off(self.stop_loss_pct, -1),
            take_profit=off(self.take_profit_pct, 1),
            trailing_distance=distance,
            trailing_activation=off(self.trailing_activation_pct, 1) if distance is not None else None,
            time_limit_s=self.time_limit_s,
        )


@dataclass(frozen=True, slots=True)
class ExitOrder:
    """The one exit order the bracket has at the OMS."""

    client_order_id: str
    leg: LegKind
    quantity: Decimal
    limit_price: Decimal | None
    state: ExitOrderState = ExitOrderState.PENDING
    filled: Decimal = ZERO

    @property
    def leaves(self) -> Decimal:
        return self.quantity - self.filled


@dataclass(frozen=True, slots=True)
class Bracket:
    """State of one bracket; `version` grows with every change."""

    bracket_id: str
    account_id: str
    symbol: str
    entry_order_id: str
    opened_at: datetime
    levels: ExitLevels
    from_policy: bool
    swap_band_pct: Decimal
    price_increment: Decimal
    entry_quantity: Decimal = ZERO
    entry_cost: Decimal = ZERO
    exited_quantity: Decimal = ZERO
    trailing_high: Decimal | None = None  # None until the trailing stop is active
    stop_moved: bool = False
    status: BracketStatus = BracketStatus.ARMED
    working: ExitOrder | None = None
    exit_leg: LegKind | None = None
    sequence: int = 0
    rejections: int = 0
    last_price: Decimal | None = None
    version: int = 0

    @property
    def open_quantity(self) -> Decimal:
        return self.entry_quantity - self.exited_quantity

    @property
    def entry_price(self) -> Decimal:
        return self.entry_cost / self.entry_quantity if self.entry_quantity > 0 else ZERO

    @property
    def trailing_stop(self) -> Decimal | None:
        if self.trailing_high is None or self.levels.trailing_distance is None:
            return None
        return self.trailing_high - self.levels.trailing_distance

    @property
    def effective_stop(self) -> Decimal | None:
        stops = [stop for stop in (self.levels.stop_loss, self.trailing_stop) if stop is not None]
        return max(stops) if stops else None

    @property
    def expires_at(self) -> datetime | None:
        if self.levels.time_limit_s is None:
            return None
        return self.opened_at + timedelta(seconds=self.levels.time_limit_s)

    @property
    def is_open(self) -> bool:
        return self.status in {BracketStatus.ARMED, BracketStatus.EXITING}

    def owns(self, client_order_id: str) -> bool:
        return client_order_id.startswith(exit_prefix(self.bracket_id))


# --- inputs ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PriceTick:
    """A market price for the bracket's symbol (last trade, or best bid of a book snapshot)."""

    price: Decimal


@dataclass(frozen=True, slots=True)
class ClockTick:
    """Nothing but time passed (time limits)."""


@dataclass(frozen=True, slots=True)
class EntryFilled:
    quantity: Decimal
    price: Decimal


@dataclass(frozen=True, slots=True)
class ExitAccepted:
    client_order_id: str


@dataclass(frozen=True, slots=True)
class ExitFilled:
    client_order_id: str
    quantity: Decimal
    price: Decimal


@dataclass(frozen=True, slots=True)
class ExitEnded:
    """The exit order ended without (more) fills: canceled, expired, rejected or denied."""

    client_order_id: str
    outcome: ExitOutcome


@dataclass(frozen=True, slots=True)
class StopMoved:
    """An operator moves the stop-loss (direction checks are the caller's)."""

    stop_loss: Decimal
    actor: str


BracketInput = PriceTick | ClockTick | EntryFilled | ExitAccepted | ExitFilled | ExitEnded | StopMoved


# --- outputs --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubmitExit:
    """Send a sell to the OMS (`limit_price` None = market)."""

    bracket_id: str
    account_id: str
    symbol: str
    client_order_id: str
    leg: LegKind
    quantity: Decimal
    limit_price: Decimal | None

    def to_log(self) -> dict[str, str | None]:
        return {
            "decision": "SubmitExit",
            "bracket_id": self.bracket_id,
            "client_order_id": self.client_order_id,
            "leg": self.leg.value,
            "quantity": format_decimal(self.quantity),
            "limit_price": None if self.limit_price is None else format_decimal(self.limit_price),
        }


@dataclass(frozen=True, slots=True)
class CancelExit:
    """Cancel the resting exit order."""

    bracket_id: str
    account_id: str
    client_order_id: str
    reason: str

    def to_log(self) -> dict[str, str | None]:
        return {
            "decision": "CancelExit",
            "bracket_id": self.bracket_id,
            "client_order_id": self.client_order_id,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class BracketEvent:
    """Something worth publishing on risk.exit-events (type past tense, details as strings)."""

    bracket_id: str
    type: str
    details: dict[str, str | None] = field(default_factory=dict)

    def to_log(self) -> dict[str, str | None]:
        return {"decision": self.type, "bracket_id": self.bracket_id, **self.details}


Decision = SubmitExit | CancelExit | BracketEvent


@dataclass(frozen=True, slots=True)
class Step:
    bracket: Bracket
    decisions: tuple[Decision, ...]


def decision_log_line(decision: Decision) -> str:
    """Canonical JSON of one decision (sorted keys): the unit of the R10 byte-identical replay."""
    return json.dumps(decision.to_log(), sort_keys=True, separators=(",", ":"))


def exit_prefix(bracket_id: str) -> str:
    return f"x-{bracket_id}-"


def exit_client_order_id(bracket_id: str, leg: LegKind, sequence: int) -> str:
    """Deterministic client order id of the `sequence`-th exit order of a bracket (<= 64 chars)."""
    return f"{exit_prefix(bracket_id)}{LEG_CODES[leg]}{sequence}"
