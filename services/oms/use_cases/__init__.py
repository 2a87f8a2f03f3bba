"""The OMS's use cases, one small class each; `services/oms/app.py` wires them into `OmsAdapters`."""

from services.oms.use_cases.approvals import DecideApproval
from services.oms.use_cases.cancellation import CancelOrder
from services.oms.use_cases.context import SYSTEM_ACTOR, OmsContext
from services.oms.use_cases.execution import ExecuteOrders
from services.oms.use_cases.funding import FundPaperAccount
from services.oms.use_cases.placement import PlaceOrder, PlaceResult, exits_problem, request_hash
from services.oms.use_cases.pre_trade import AccountTerms, Denial, DenialCode, PreTradeChain, Reserve
from services.oms.use_cases.publishing import order_payload, publish_order_events
from services.oms.use_cases.queries import OrderQueries
from services.oms.use_cases.reconciliation import (
    ReconcileAccounts,
    ReconcileIncomplete,
    ReconcileReport,
    ResolveOrder,
    ResolveOutcome,
)
from services.oms.use_cases.transfers import TransferBetweenAccounts
from shared.contracts.approvals import ApprovalDecision

__all__ = [
    "SYSTEM_ACTOR",
    "AccountTerms",
    "ApprovalDecision",
    "CancelOrder",
    "DecideApproval",
    "Denial",
    "DenialCode",
    "ExecuteOrders",
    "FundPaperAccount",
    "OmsContext",
    "OrderQueries",
    "PlaceOrder",
    "PlaceResult",
    "PreTradeChain",
    "ReconcileAccounts",
    "ReconcileIncomplete",
    "ReconcileReport",
    "Reserve",
    "ResolveOrder",
    "ResolveOutcome",
    "TransferBetweenAccounts",
    "exits_problem",
    "order_payload",
    "publish_order_events",
    "request_hash",
]
