"""Exit instructions an entry order may carry (`OrderCreate.exits`), read by the risk service's exit engine.

Spot is long-only: entries are buys, exits are sells. Prices are absolute quote prices. Checks that need the
entry price (a stop below it, a take-profit above it) run where the price is known: the OMS against a limit
price at submit time, the risk service against the fill price when the bracket is armed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

Price = Annotated[Decimal, Field(gt=0, max_digits=38, decimal_places=18)]


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
    time_limit_s: Annotated[int, Field(gt=0, le=366 * 24 * 3600)] | None = None

    @model_validator(mode="after")
    def _stop_below_take_profit(self) -> Self:
        if self.stop_loss is not None and self.take_profit is not None and self.stop_loss >= self.take_profit:
            raise ValueError("stop_loss must be below take_profit for a long position")
        return self

    def is_empty(self) -> bool:
        return self.stop_loss is None and self.take_profit is None and self.trailing is None
