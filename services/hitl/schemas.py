"""Request and response models of the hitl service (Create/Update/Read kept separate, extra="forbid")."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.hitl.policy import PolicyRules

HASH_PATTERN = r"^[0-9a-f]{64}$"
# Subjects whose requests only their owning service opens through events: a REST request for an order could
# otherwise claim an OMS order id with another payload and have the directors approve the wrong thing. The
# same holds for hedge overrides (the hedge service's ApprovalRequested on hedge.target-events.v1).
EVENT_ONLY_SUBJECT_TYPES = frozenset({"order", "hedge_override"})
RequestStatus = Literal["pending", "approved", "rejected", "expired"]
DecisionKind = Literal["approved", "rejected", "expired"]


class PolicyRead(BaseModel):
    """The current version of an account's approval policy."""

    model_config = ConfigDict(extra="forbid")

    account_id: str
    version: int = Field(description="0: no policy stored yet, the defaults apply")
    rules: PolicyRules
    created_by: str | None
    created_at: datetime | None


class RequestCreate(BaseModel):
    """A request for director approval of `payload` (the exact thing to approve)."""

    model_config = ConfigDict(extra="forbid")

    subject_type: str = Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_]*$")
    subject_id: str = Field(min_length=1, max_length=128)
    account_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    payload: dict[str, Any] = Field(description="JSON object shown to the directors; its RFC 8785 SHA-256 is bound")

    @field_validator("subject_type")
    @classmethod
    def _not_event_only(cls, value: str) -> str:
        if value in EVENT_ONLY_SUBJECT_TYPES:
            raise ValueError(f"{value!r} requests come only from the owning service's ApprovalRequested events")
        return value


class VoteCreate(BaseModel):
    """An approval: the payload hash the director saw, and an optional reason."""

    model_config = ConfigDict(extra="forbid")

    payload_hash: str = Field(pattern=HASH_PATTERN, description="SHA-256 (hex) of the payload the director saw")
    reason: str | None = Field(default=None, max_length=500)


class RejectCreate(BaseModel):
    """A rejection: the payload hash the director saw, and the reason (required)."""

    model_config = ConfigDict(extra="forbid")

    payload_hash: str = Field(pattern=HASH_PATTERN)
    reason: str = Field(min_length=1, max_length=500)

    @field_validator("reason")
    @classmethod
    def _reason_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a rejection needs a reason")
        return value.strip()


class VoteRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    voter: str
    vote: Literal["approve", "reject"]
    reason: str | None
    voted_at: datetime


class DecisionRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: DecisionKind
    reason: str | None
    payload_hash: str
    approvers: list[str]
    decided_at: datetime


class RequestRead(BaseModel):
    """An approval request with its votes and (once decided) its decision."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    subject_type: str
    subject_id: str
    account_id: str
    requested_by: str
    source: Literal["event", "rest"]
    payload: dict[str, Any]
    payload_hash: str
    notional: Decimal | None
    status: RequestStatus
    quorum: int
    eligible_directors: list[str]
    policy_version: int | None
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    votes: list[VoteRead]
    decision: DecisionRead | None


class RequestPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[RequestRead]
