"""The envelope every Kafka message travels in: identity, type, origin, correlation, and a JSON payload.

Payloads are plain JSON: money and quantities go in as decimal *strings* (`str(Decimal)`), never floats,
so that no value is rounded on the wire. Timestamps inside a payload are ISO-8601 strings.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from shared.observability.correlation import get_correlation_id, is_valid_correlation_id, new_correlation_id

HEADER_CORRELATION_ID = "correlation_id"
HEADER_EVENT_TYPE = "event_type"
HEADER_EVENT_ID = "event_id"
# "Bearer <token>" of the producing service's identity, added at publish time to commands (never stored in an outbox).
HEADER_AUTHORIZATION = "authorization"

KafkaHeaders = list[tuple[str, bytes]]

CorrelationId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]


class MessageDecodeError(ValueError):
    """A Kafka record whose value is not a valid envelope."""


class Envelope(BaseModel):
    """An immutable event or command with its metadata; `payload` is JSON (decimals as strings)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: uuid.UUID
    type: Annotated[str, Field(pattern=r"^[A-Z][A-Za-z0-9]{0,127}$")]
    schema_version: Annotated[int, Field(ge=1)]
    occurred_at: AwareDatetime
    producer: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
    correlation_id: CorrelationId
    causation_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    aggregate_id: Annotated[str, Field(min_length=1, max_length=256)]
    payload: dict[str, JsonValue]

    @field_validator("occurred_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @classmethod
    def new(
        cls,
        *,
        type: str,  # the envelope field is called `type`
        producer: str,
        aggregate_id: str,
        payload: Mapping[str, JsonValue],
        schema_version: int = 1,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        now: datetime | None = None,
        event_id: uuid.UUID | None = None,
    ) -> Self:
        """Build an envelope; the correlation id defaults to the current context's (or a fresh one)."""
        return cls(
            event_id=event_id if event_id is not None else uuid.uuid4(),
            type=type,
            schema_version=schema_version,
            occurred_at=now if now is not None else datetime.now(UTC),
            producer=producer,
            correlation_id=correlation_id or get_correlation_id() or new_correlation_id(),
            causation_id=causation_id,
            aggregate_id=aggregate_id,
            payload=dict(payload),
        )

    def follow_up(
        self,
        *,
        type: str,  # the envelope field is called `type`
        producer: str,
        aggregate_id: str,
        payload: Mapping[str, JsonValue],
        schema_version: int = 1,
        now: datetime | None = None,
    ) -> Envelope:
        """Build a message caused by this one: same correlation id, causation id = this event id."""
        return Envelope.new(
            type=type,
            producer=producer,
            aggregate_id=aggregate_id,
            payload=payload,
            schema_version=schema_version,
            correlation_id=self.correlation_id,
            causation_id=str(self.event_id),
            now=now,
        )

    def to_bytes(self) -> bytes:
        """Serialize to compact UTF-8 JSON (the Kafka record value)."""
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes | None) -> Self:
        """Parse a Kafka record value; raise MessageDecodeError when it is not a valid envelope."""
        if data is None:
            raise MessageDecodeError("record has no value")
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise MessageDecodeError(
                f"not a valid envelope: {exc.error_count()} error(s): {_first_error(exc)}"
            ) from exc

    def kafka_headers(self) -> KafkaHeaders:
        """Kafka headers carrying the correlation id, event type and event id."""
        return [
            (HEADER_CORRELATION_ID, self.correlation_id.encode()),
            (HEADER_EVENT_TYPE, self.type.encode()),
            (HEADER_EVENT_ID, str(self.event_id).encode()),
        ]


def header_value(headers: Iterable[tuple[str, bytes]] | None, name: str) -> str | None:
    """Return the first header called `name` decoded as UTF-8, or None when absent or undecodable."""
    for key, value in headers or ():
        if key == name and value is not None:
            try:
                return value.decode()
            except UnicodeDecodeError:
                return None
    return None


def correlation_id_from_headers(headers: Iterable[tuple[str, bytes]] | None) -> str | None:
    """Return the record's `correlation_id` header when present and well formed."""
    value = header_value(headers, HEADER_CORRELATION_ID)
    return value if value is not None and is_valid_correlation_id(value) else None


def _first_error(exc: ValidationError) -> str:
    # Location and message only: the offending input may be large or sensitive.
    first = exc.errors(include_url=False, include_input=False)[0]
    location = ".".join(str(part) for part in first["loc"]) or "<root>"
    return f"{location}: {first['msg']}"
