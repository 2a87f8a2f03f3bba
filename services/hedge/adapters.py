"""The hedge service's typed composition: its use cases, built once per process by `app.py`, stored in
`runtime.adapters` and read with `adapters_of(runtime, HedgeAdapters)`."""

from __future__ import annotations

from dataclasses import dataclass

from services.hedge.approval import OverrideApprovalPolicy
from services.hedge.config import HedgeSettings
from services.hedge.use_cases import (
    Evaluation,
    HedgeContext,
    HedgeOrders,
    Overrides,
    Policies,
    Queries,
    Recommendations,
)


@dataclass(frozen=True)
class HedgeAdapters:
    """Everything the routers and consumers of the hedge service call."""

    context: HedgeContext
    evaluation: Evaluation
    orders: HedgeOrders
    recommendations: Recommendations
    overrides: Overrides
    policies: Policies
    queries: Queries

    @property
    def settings(self) -> HedgeSettings:
        return self.context.settings

    @classmethod
    def assemble(cls, context: HedgeContext, approvals: OverrideApprovalPolicy | None) -> HedgeAdapters:
        """Wire the use cases on one context (`approvals` None: overrides never wait for a director)."""
        recommendations = Recommendations(context)
        orders = HedgeOrders(context)
        evaluation = Evaluation(context, recommendations, orders)
        queries = Queries(context)
        return cls(
            context=context,
            evaluation=evaluation,
            orders=orders,
            recommendations=recommendations,
            overrides=Overrides(context, evaluation, queries, approvals),
            policies=Policies(context, evaluation),
            queries=queries,
        )
