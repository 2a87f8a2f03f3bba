"""Exit instructions an entry order may carry (`OrderCreate.exits`), read by the risk service's exit engine.

Spot is long-only: entries are buys, exits are sells. Prices are absolute quote prices. Checks that need the
entry price (a stop below it, a take-profit above it) run where the price is known: the OMS against a limit
price at submit time, the risk service against the fill price when the bracket is armed.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contracts.base import DecimalText, Identifier, Message, Text
from shared.domain.bracket_model import BracketStatus, LegKind
from shared.domain.money import PositiveDecimal
from shared.errors import rule_violation
from shared.web import JsonInteger

# A decimal string above 0 (at most 20 integer and 18 decimal digits, NUMERIC(38,18)); the schema's pattern
# states exactly what the validator accepts.
Price = PositiveDecimal


class TrailingInstructions(BaseModel):
    """A trailing stop: armed once the price reaches `activation_price` (at once when absent), then it rests
    `distance` below the highest price seen and only ever moves up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    distance: Price
    activation_price: Price | None = None


class ExitInstructions(BaseModel):
    """Stop-loss, take-profit, trailing stop and time limit for the position an entry opens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stop_loss: Price | None = None
    take_profit: Price | None = None
    trailing: TrailingInstructions | None = None
    time_limit_s: Annotated[int, Field(gt=0, le=366 * 24 * 3600), JsonInteger] | None = None

    @model_validator(mode="after")
    def _stop_below_take_profit(self) -> Self:
        if self.stop_loss is not None and self.take_profit is not None and self.stop_loss >= self.take_profit:
            raise rule_violation("stop_loss must be below take_profit for a long position")
        return self

    def is_empty(self) -> bool:
        return self.stop_loss is None and self.take_profit is None and self.trailing is None


# --- exit events on risk.exit-events.v1 (aggregate and key: the bracket id) -----------------------------------
# The bracket's identity and state, then the domain event's details (decimals as strings, flags as "true"/"false").

Quantity = Annotated[DecimalText, Field(ge=0)]
OptionalPrice = DecimalText | None
Flag = Literal["true", "false"]
LegName = LegKind | Literal["unknown"]


class BracketEventMessage(Message):
    """What every exit event carries."""

    bracket_id: Annotated[str, Field(min_length=1, max_length=128)]
    account_id: Identifier
    symbol: Annotated[str, Field(pattern=r"^[A-Z0-9]+/[A-Z0-9]+$", max_length=32)]
    entry_order_id: Identifier
    status: BracketStatus
    open_quantity: Quantity
    version: Annotated[int, Field(ge=0)]


class BracketArmed(BracketEventMessage):
    TYPE = "BracketArmed"

    stop_loss: OptionalPrice
    take_profit: OptionalPrice
    trailing_distance: OptionalPrice
    trailing_activation: OptionalPrice
    from_policy: Flag


class StopMoved(BracketEventMessage):
    TYPE = "StopMoved"

    previous: OptionalPrice
    stop_loss: OptionalPrice
    actor: Annotated[str, Field(min_length=1, max_length=256)]


class TrailingActivated(BracketEventMessage):
    TYPE = "TrailingActivated"

    trailing_stop: OptionalPrice


class TrailingRatcheted(BracketEventMessage):
    TYPE = "TrailingRatcheted"

    previous: OptionalPrice
    trailing_stop: OptionalPrice


class BracketGrew(BracketEventMessage):
    TYPE = "BracketGrew"

    quantity: Quantity
    price: DecimalText


class ExitFilled(BracketEventMessage):
    TYPE = "ExitFilled"

    client_order_id: Identifier
    leg: LegName
    quantity: Quantity
    price: DecimalText


class ExitFailed(BracketEventMessage):
    TYPE = "ExitFailed"

    client_order_id: Identifier
    rejections: Annotated[str, Field(pattern=r"^[0-9]{1,6}$")]


class ExitTriggered(BracketEventMessage):
    TYPE = "ExitTriggered"

    leg: LegKind
    price: OptionalPrice
    stop: OptionalPrice


class BracketClosed(BracketEventMessage):
    TYPE = "BracketClosed"

    exit_leg: LegKind | None
    exited_quantity: Quantity


class BracketRearmed(BracketEventMessage):
    TYPE = "BracketRearmed"

    actor: Annotated[str, Field(min_length=1, max_length=256)]


class ExplicitExitsReplaced(BracketEventMessage):
    """The entry's explicit exits were unusable (invalid, or on the wrong side of the fill price): the bracket
    was armed with the account's default exits instead; `field` names the exit that was refused and why."""

    TYPE = "ExplicitExitsReplaced"

    field: Annotated[str, Field(min_length=1, max_length=64)]
    reason: Text


EXIT_EVENTS: tuple[type[BracketEventMessage], ...] = (
    BracketArmed,
    StopMoved,
    TrailingActivated,
    TrailingRatcheted,
    BracketGrew,
    ExitFilled,
    ExitFailed,
    ExitTriggered,
    BracketClosed,
    BracketRearmed,
    ExplicitExitsReplaced,
)
