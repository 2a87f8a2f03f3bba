"""Use cases of the hedge service, one small class each: evaluation (valuation, target, recommendations, hedge
orders), overrides, policies and the status read models."""

from services.hedge.use_cases.common import HedgeContext
from services.hedge.use_cases.evaluation import BalanceUpdate, Evaluation
from services.hedge.use_cases.orders import HedgeOrders
from services.hedge.use_cases.overrides import Overrides
from services.hedge.use_cases.policy import Policies
from services.hedge.use_cases.queries import Queries
from services.hedge.use_cases.recommendations import Recommendations

__all__ = [
    "BalanceUpdate",
    "Evaluation",
    "HedgeContext",
    "HedgeOrders",
    "Overrides",
    "Policies",
    "Queries",
    "Recommendations",
]
