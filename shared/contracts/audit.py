"""`AuditAnchored` on `audit.anchors.v1` (key: the chain): a signed commitment `(length, head_hash)` to one
audit chain, as `shared.audit.anchors.Anchor.as_payload()` writes it. The signature is checked by the verifier,
not here: this model only fixes the shape."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from shared.contracts.base import Message

ANCHOR_PAYLOAD_TYPE = "aether.audit.anchor.v1"


class AuditAnchored(Message):
    TYPE = "AuditAnchored"

    type: Literal["aether.audit.anchor.v1"]
    chain: Annotated[str, Field(min_length=1, max_length=256)]
    length: Annotated[int, Field(ge=0)]
    head_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    anchored_at: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")]
    key_id: Annotated[str, Field(min_length=1, max_length=128)]
    signature: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_-]+=*$")]
