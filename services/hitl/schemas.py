"""Request and response models of the hitl service (Create/Update/Read kept separate, extra="forbid")."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from services.hitl.policy import PolicyRules
from shared.contracts.approvals import APPROVAL_PAYLOAD_BOUNDS, ApprovalDecision, SubjectType
from shared.web import (
    IDENTIFIER_PATTERN,
    SAFE_INTEGER,
    SAFE_TEXT_PATTERN,
    Encodable,
    Reason,
    check_json_object,
    safe_text,
)

HASH_PATTERN = r"^[0-9a-f]{64}$"
# Subjects whose requests only their owning service opens through events: a REST request for an order could
# otherwise claim an OMS order id with another payload and have the directors approve the wrong thing. The
# same holds for hedge overrides (the hedge service's ApprovalRequested on hedge.target-events.v1).
EVENT_ONLY_SUBJECT_TYPES = frozenset(subject.value for subject in SubjectType)
RequestStatus = Literal["pending", "approved", "rejected", "expired"]
DecisionKind = ApprovalDecision

# An approval payload is shown to directors and hashed (RFC 8785): bounded, JSON-exact, storable in JSONB.
PAYLOAD_BOUNDS = APPROVAL_PAYLOAD_BOUNDS
PAYLOAD_MAX_DEPTH = PAYLOAD_BOUNDS.max_depth
PAYLOAD_MAX_ENTRIES = PAYLOAD_BOUNDS.max_entries
PAYLOAD_MAX_TEXT = PAYLOAD_BOUNDS.max_text
PAYLOAD_MAX_BYTES = PAYLOAD_BOUNDS.max_bytes


def _value_schema(level: int) -> dict[str, Any]:
    scalars: list[dict[str, Any]] = [
        {"type": "string", "maxLength": PAYLOAD_MAX_TEXT, "pattern": SAFE_TEXT_PATTERN},
        {"type": "number", "minimum": -SAFE_INTEGER, "maximum": SAFE_INTEGER},
        {"type": "boolean"},
        {"type": "null"},
    ]
    if level >= PAYLOAD_MAX_DEPTH:
        return {"anyOf": scalars}
    inner = _value_schema(level + 1)
    return {
        "anyOf": [*scalars, {"type": "array", "maxItems": PAYLOAD_MAX_ENTRIES, "items": inner}, _object_schema(inner)]
    }


def _object_schema(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "maxProperties": PAYLOAD_MAX_ENTRIES,
        "propertyNames": {"maxLength": PAYLOAD_BOUNDS.max_key, "pattern": SAFE_TEXT_PATTERN},
        "additionalProperties": values,
    }


def _bounded_payload(payload: dict[str, Any]) -> dict[str, Any]:
    return check_json_object(payload, PAYLOAD_BOUNDS)


Payload = Annotated[
    dict[str, Any],
    AfterValidator(_bounded_payload),
    WithJsonSchema(
        {
            **_object_schema(_value_schema(1)),
            "description": "JSON object shown to the directors; its RFC 8785 SHA-256 is bound "
            f"(at most {PAYLOAD_MAX_DEPTH} levels, {PAYLOAD_MAX_ENTRIES} entries per level, "
            f"{PAYLOAD_MAX_BYTES} bytes; numbers finite and within +-(2^53 - 1))",
        }
    ),
]
SubjectId = Annotated[str, safe_text(min_length=1, max_length=128), Encodable]
OptionalReason = Annotated[str, safe_text(max_length=500), Encodable]


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

    subject_type: str = Field(
        min_length=1,
        max_length=40,
        pattern=r"^[a-z][a-z0-9_]*$",
        # What `_not_event_only` refuses, in the schema.
        json_schema_extra={"not": {"enum": [*sorted(EVENT_ONLY_SUBJECT_TYPES)]}},
    )
    subject_id: SubjectId
    account_id: str = Field(min_length=1, max_length=64, pattern=IDENTIFIER_PATTERN)
    payload: Payload

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
    reason: OptionalReason | None = None


class RejectCreate(BaseModel):
    """A rejection: the payload hash the director saw, and the reason (required)."""

    model_config = ConfigDict(extra="forbid")

    payload_hash: str = Field(pattern=HASH_PATTERN)
    reason: Reason

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
