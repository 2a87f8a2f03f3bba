"""Trading-state rules in one place: severity, the effective state of an account, transitions, pre-trade denial.

ACTIVE < REDUCING < HALTED. The effective state of an account is the most severe of the global state and the
account's own. HALTED denies every new order (cancels still pass); REDUCING admits only exposure-reducing
orders, which on spot is a sell of at most the held position. The risk service moves the states; the OMS reads
them; both apply the rules below.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from shared.domain.orders import Order
from shared.domain.types import OrderSide, TradingState

__all__ = [
    "SEVERITY",
    "StateDenial",
    "StateDenialCode",
    "TradingState",
    "denial_for_state",
    "effective_state",
    "is_loosening",
    "is_tightening",
    "leaves_halted",
    "reduces_exposure",
    "severity",
]

SEVERITY: dict[TradingState, int] = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


def severity(state: TradingState) -> int:
    """How strict a state is: 0 (ACTIVE) to 2 (HALTED)."""
    return SEVERITY[state]


def effective_state(states: Iterable[TradingState]) -> TradingState:
    """The most severe of the given states (global and account); none published means ACTIVE."""
    return max(states, key=severity, default=TradingState.ACTIVE)


def is_tightening(current: TradingState, target: TradingState) -> bool:
    """Moving to a stricter state (ACTIVE -> REDUCING -> HALTED)."""
    return severity(target) > severity(current)


def is_loosening(current: TradingState, target: TradingState) -> bool:
    """Moving to a less strict state (e.g. leaving HALTED)."""
    return severity(target) < severity(current)


def leaves_halted(current: TradingState, target: TradingState) -> bool:
    """Leaving HALTED for a less strict state (only a director may)."""
    return current is TradingState.HALTED and is_loosening(current, target)


class StateDenialCode(StrEnum):
    """Why the trading state refuses a new order."""

    TRADING_HALTED = "trading_halted"
    TRADING_REDUCING = "trading_reducing"


@dataclass(frozen=True, slots=True)
class StateDenial:
    """The trading state's refusal of a new order: a code and the sentence for a person."""

    code: StateDenialCode
    sentence: str


_HALTED = StateDenial(StateDenialCode.TRADING_HALTED, "trading is halted: new orders are denied (cancels still pass)")
_REDUCING = StateDenial(
    StateDenialCode.TRADING_REDUCING, "trading is reduce-only: only sells of a held position are allowed"
)


def reduces_exposure(side: OrderSide, quantity: Decimal, position_quantity: Decimal) -> bool:
    """On spot, only a sell of at most the held position reduces exposure."""
    return side is OrderSide.SELL and quantity <= position_quantity


def denial_for_state(state: TradingState, order: Order, position_quantity: Decimal) -> StateDenial | None:
    """The denial when the trading state forbids this new order, else None; cancels are never checked here."""
    match state:
        case TradingState.HALTED:
            return _HALTED
        case TradingState.REDUCING:
            return None if reduces_exposure(order.side, order.quantity, position_quantity) else _REDUCING
        case TradingState.ACTIVE:
            return None
    raise ValueError(f"unknown trading state {state!r}")  # fail closed: never a default branch
