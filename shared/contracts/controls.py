"""What the OMS enforces before an order reaches a venue, as each owner publishes it on its compacted controls topic.

The risk service owns trading states, pre-trade limits and exit policies (`risk.controls.v1`); the approval
service owns approval policies (`hitl.controls.v1`). Each change is written to the owner's outbox in the
transaction that commits it, keyed by `control_key(...)`, so compaction keeps the latest value of every key.
At start the owner publishes its whole current state again, then a `ControlsSnapshotPublished` marker: the OMS
copies every record into its own schema (`oms.controls`) and enforces from there. Until it holds the marker of
both owners the OMS does not trade (503 `controls_unknown`), so nothing missing ever reads as permission.

Versions come from the owner's rows and only grow; a record older than the copy the OMS holds changes nothing.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from shared.contracts.approvals import ApprovalPolicyValue
from shared.contracts.base import Identifier, Message, Timestamp
from shared.contracts.risk import ExitPolicyValue, RiskLimitsValue, ScopedState

__all__ = [
    "ApprovalPolicySet",
    "ControlKind",
    "ControlOwner",
    "ControlsSnapshotPublished",
    "ExitPolicySet",
    "RiskLimitsSet",
    "TradingStateSet",
    "control_key",
]

Version = Annotated[int, Field(ge=0)]


class ControlKind(StrEnum):
    """What one controls record holds."""

    TRADING_STATE = "trading_state"
    RISK_LIMITS = "risk_limits"
    EXIT_POLICY = "exit_policy"
    APPROVAL_POLICY = "approval_policy"


class ControlOwner(StrEnum):
    """The services whose controls the OMS enforces (each publishes a snapshot marker)."""

    RISK = "risk"
    HITL = "hitl"


def control_key(kind: ControlKind, account_id: str | None) -> str:
    """The Kafka key (and the OMS's row key) of one control: `<kind>:global` or `<kind>:account:<id>`."""
    return f"{kind.value}:global" if account_id is None else f"{kind.value}:account:{account_id}"


class TradingStateSet(ScopedState):
    """A scope's current trading state (version 0: a scope never changed, i.e. the global ACTIVE at first start)."""

    TYPE = "TradingStateSet"

    version: Version
    changed_at: Timestamp

    @property
    def key(self) -> str:
        return control_key(ControlKind.TRADING_STATE, self.account_id)


class RiskLimitsSet(Message):
    """An account's current pre-trade limits (the risk service's version of them)."""

    TYPE = "RiskLimitsSet"

    account_id: Identifier
    version: Version
    limits: RiskLimitsValue

    @property
    def key(self) -> str:
        return control_key(ControlKind.RISK_LIMITS, self.account_id)


class ExitPolicySet(Message):
    """An account's current exit policy (the OMS enforces its `require_explicit_exits`)."""

    TYPE = "ExitPolicySet"

    account_id: Identifier
    policy: ExitPolicyValue

    @property
    def key(self) -> str:
        return control_key(ControlKind.EXIT_POLICY, self.account_id)


class ApprovalPolicySet(Message):
    """An account's current approval policy version (the OMS enforces its order rules)."""

    TYPE = "ApprovalPolicySet"

    policy: ApprovalPolicyValue

    @property
    def key(self) -> str:
        return control_key(ControlKind.APPROVAL_POLICY, self.policy.account_id)


class ControlsSnapshotPublished(Message):
    """The owner has published every control it holds (after this record, a missing key means none is set)."""

    TYPE = "ControlsSnapshotPublished"

    owner: ControlOwner
    records: Annotated[int, Field(ge=0)]
    published_at: Timestamp

    @property
    def key(self) -> str:
        return f"snapshot:{self.owner.value}"


ControlRecord = TradingStateSet | RiskLimitsSet | ExitPolicySet | ApprovalPolicySet | ControlsSnapshotPublished
