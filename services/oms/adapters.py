"""The OMS's typed composition root: what `app.py` builds once per process and routers, consumers and workers
read with `adapters_of(runtime, OmsAdapters)`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from services.oms.service import OrderService
from services.oms.use_cases import (
    CancelOrder,
    DecideApproval,
    ExecuteOrders,
    FundPaperAccount,
    OrderQueries,
    PlaceOrder,
    ReconcileAccounts,
    ReconcileReport,
    ResolveOrder,
    TransferBetweenAccounts,
)
from shared.app_factory import ServiceRuntime, adapters_of
from shared.venues.base import LatestBook, VenueAdapter


@dataclass
class ReconciliationStatus:
    """Whether startup reconciliation with the venue has finished (readiness and the resolver wait for it)."""

    report: ReconcileReport | None = None

    @property
    def done(self) -> bool:
        return self.report is not None


@dataclass(frozen=True, slots=True)
class OmsAdapters:
    """The use cases of this process and the adapters they run on."""

    orders: OrderService  # every use case below, wired together (consumers and tests drive it whole)
    venue: VenueAdapter
    latest_book: LatestBook
    reconciliation_status: ReconciliationStatus = field(default_factory=ReconciliationStatus)
    # The paper venue's books are restored from its schema before reconciling (None for a venue given in tests).
    restore_venue: Callable[[], Awaitable[int]] | None = None

    @property
    def placement(self) -> PlaceOrder:
        return self.orders.placement

    @property
    def execution(self) -> ExecuteOrders:
        return self.orders.execution

    @property
    def cancellation(self) -> CancelOrder:
        return self.orders.cancellation

    @property
    def resolver(self) -> ResolveOrder:
        return self.orders.resolver

    @property
    def reconciliation(self) -> ReconcileAccounts:
        return self.orders.reconciliation

    @property
    def approvals(self) -> DecideApproval:
        return self.orders.approvals

    @property
    def funding(self) -> FundPaperAccount:
        return self.orders.funding

    @property
    def transfers(self) -> TransferBetweenAccounts:
        return self.orders.transfers

    @property
    def queries(self) -> OrderQueries:
        return self.orders.queries


def oms_adapters(runtime: ServiceRuntime) -> OmsAdapters:
    """The OMS adapters of this runtime (a start-up bug if missing)."""
    return adapters_of(runtime, OmsAdapters)


def _from_request(request: Request) -> OmsAdapters:
    return oms_adapters(request.app.state.runtime)


Adapters = Annotated[OmsAdapters, Depends(_from_request)]
