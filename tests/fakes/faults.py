"""A fault-injecting venue wrapper for tests: timeouts after send and refusals before send.

`FaultyVenue` wraps any `VenueAdapter`. For `submit` and `cancel`, with probability `ambiguous_rate` it
calls the inner venue and THEN raises `AmbiguousOutcome` (the request took effect, the answer was lost),
and with probability `temporary_rate` it raises `TemporaryError` BEFORE calling it (nothing happened).
Reads pass through untouched. The draws come from the caller's seeded `random.Random`, so a run replays.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.domain.types import AccountId, ClientOrderId
from shared.venues.base import (
    AmbiguousOutcome,
    TemporaryError,
    UpdateListener,
    VenueAdapter,
    VenueBalance,
    VenueFill,
    VenueOrder,
    VenueOrderRequest,
)


class Fault(StrEnum):
    NONE = "none"
    AMBIGUOUS = "ambiguous"  # sent, then the answer was lost
    TEMPORARY = "temporary"  # refused before anything was sent


@dataclass
class FaultCounts:
    """What the wrapper did, per operation."""

    calls: dict[str, int] = field(default_factory=dict)
    ambiguous: dict[str, int] = field(default_factory=dict)
    temporary: dict[str, int] = field(default_factory=dict)

    def record(self, operation: str, fault: Fault) -> None:
        """Count one call of `operation` and the fault injected into it."""
        self.calls[operation] = self.calls.get(operation, 0) + 1
        if fault is Fault.AMBIGUOUS:
            self.ambiguous[operation] = self.ambiguous.get(operation, 0) + 1
        elif fault is Fault.TEMPORARY:
            self.temporary[operation] = self.temporary.get(operation, 0) + 1

    @property
    def total_ambiguous(self) -> int:
        return sum(self.ambiguous.values())

    @property
    def total_temporary(self) -> int:
        return sum(self.temporary.values())


class FaultyVenue:
    """Wraps a venue; `submit`/`cancel` fail by the seeded draws, everything else passes through."""

    def __init__(
        self,
        inner: VenueAdapter,
        rng: random.Random,
        *,
        ambiguous_rate: float = 0.0,
        temporary_rate: float = 0.0,
    ) -> None:
        if ambiguous_rate < 0 or temporary_rate < 0 or ambiguous_rate + temporary_rate > 1:
            raise ValueError("fault rates must be non-negative and sum to at most 1")
        self.inner = inner
        self.name = inner.name
        self.rng = rng
        self.ambiguous_rate = ambiguous_rate
        self.temporary_rate = temporary_rate
        self.counts = FaultCounts()
        self.enabled = True

    def __getattr__(self, name: str) -> Any:
        # Everything beyond the protocol (a paper venue's `deposit`, `restore`, `on_trade`...) is the inner venue's.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _draw(self, operation: str) -> Fault:
        fault = Fault.NONE
        if self.enabled:
            roll = self.rng.random()
            if roll < self.ambiguous_rate:
                fault = Fault.AMBIGUOUS
            elif roll < self.ambiguous_rate + self.temporary_rate:
                fault = Fault.TEMPORARY
        self.counts.record(operation, fault)
        return fault

    def subscribe(self, listener: UpdateListener) -> None:
        """Listeners are registered with the inner venue (faults affect only request/answer paths)."""
        self.inner.subscribe(listener)

    async def submit(self, request: VenueOrderRequest) -> VenueOrder:
        """Submit through the inner venue unless a fault is drawn."""
        fault = self._draw("submit")
        if fault is Fault.TEMPORARY:
            raise TemporaryError(f"injected: submit {request.client_order_id} refused before send")
        order = await self.inner.submit(request)
        if fault is Fault.AMBIGUOUS:
            raise AmbiguousOutcome(f"injected: submit {request.client_order_id} timed out after send")
        return order

    async def cancel(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder:
        """Cancel through the inner venue unless a fault is drawn."""
        fault = self._draw("cancel")
        if fault is Fault.TEMPORARY:
            raise TemporaryError(f"injected: cancel {client_order_id} refused before send")
        order = await self.inner.cancel(account_id, client_order_id)
        if fault is Fault.AMBIGUOUS:
            raise AmbiguousOutcome(f"injected: cancel {client_order_id} timed out after send")
        return order

    async def query(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder | None:
        """Pass through."""
        return await self.inner.query(account_id, client_order_id)

    async def open_orders(self, account_id: AccountId) -> Sequence[VenueOrder]:
        """Pass through."""
        return await self.inner.open_orders(account_id)

    async def fills_since(self, account_id: AccountId, after_sequence: int) -> Sequence[VenueFill]:
        """Pass through."""
        return await self.inner.fills_since(account_id, after_sequence)

    async def balances(self, account_id: AccountId) -> Sequence[VenueBalance]:
        """Pass through."""
        return await self.inner.balances(account_id)
