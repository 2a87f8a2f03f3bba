"""The hedge service's messages: kill-switch recommendations (`hedge.recommendation-events.v1`, read by risk)
and rebalance targets (`hedge.target-events.v1`). Its approval requests for overrides are in `approvals.py`;
its orders are `SubmitOrder` commands (`orders.py`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from shared.contracts.base import Identifier, Message, NonNegativeDecimal, PositiveDecimal, Text, Timestamp
from shared.domain.hedge import HedgeLevel
from shared.domain.types import OrderSide

__all__ = ["HedgeLevel", "HedgeRebalanceRequested", "KillSwitchRecommended", "RecommendationRearmed"]

RecommendationId = Annotated[str, Field(min_length=1, max_length=128)]
Actor = Annotated[str, Field(min_length=1, max_length=256)]


class KillSwitchRecommended(Message):
    """The account's drawdown crossed a level's threshold (aggregate and key: the account id)."""

    TYPE = "KillSwitchRecommended"

    recommendation_id: RecommendationId
    account_id: Identifier
    level: HedgeLevel
    drawdown: NonNegativeDecimal
    threshold: NonNegativeDecimal
    raised_at: Timestamp


class RecommendationRearmed(Message):
    """A raised recommendation was re-armed, by hand or automatically (aggregate and key: the account id)."""

    TYPE = "RecommendationRearmed"

    recommendation_id: RecommendationId
    account_id: Identifier
    level: HedgeLevel
    actor: Actor
    reason: Text
    rearmed_at: Timestamp


class HedgeRebalanceRequested(Message):
    """The hedge service sent a `SubmitOrder` to move the account's hedge fraction (aggregate: the account id)."""

    TYPE = "HedgeRebalanceRequested"

    account_id: Identifier
    target_version: Annotated[int, Field(ge=1)]
    from_fraction: NonNegativeDecimal
    to_fraction: NonNegativeDecimal
    client_order_id: Identifier
    side: OrderSide
    quantity: PositiveDecimal
