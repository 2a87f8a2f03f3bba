"""Base classes and wire types of the contracts: frozen models, decimal strings, ISO timestamps.

A message model carries its envelope `TYPE` and `SCHEMA_VERSION` as class attributes; a mirror value is what a
service writes to a Redis key of `shared/mirror_keys.py`. Both refuse unknown fields and unknown enum values:
a consumer that cannot read a message dead-letters it, it never guesses.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Annotated, ClassVar, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
)

from shared.domain.money import DECIMAL_PATTERN, MoneyError, format_decimal, to_decimal


class ContractViolation(ValueError):
    """A message or mirror value that breaks its contract: unknown type, unknown enum value, bad or missing field."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @classmethod
    def from_validation(cls, what: str, error: ValidationError) -> ContractViolation:
        """A violation naming the first failing field (location and message only, never the input)."""
        first = error.errors(include_url=False, include_input=False)[0]
        location = ".".join(str(part) for part in first["loc"]) or "<root>"
        message = str(first["msg"]).removeprefix("Value error, ")
        return cls(f"{what}: {error.error_count()} error(s): {location}: {message}")


def _wire_decimal(value: object) -> Decimal:
    # Strings only (or a Decimal built in Python): a JSON number has already been through someone's float.
    if isinstance(value, Decimal):
        return to_decimal(value)
    if not isinstance(value, str):
        raise MoneyError('must be a decimal string such as "12.50"')
    return to_decimal(value)


# A Decimal in Python, a plain decimal string on the wire (format_decimal: "1.5", "10", never "1E+1").
DecimalText = Annotated[
    Decimal,
    BeforeValidator(_wire_decimal),
    PlainSerializer(format_decimal, return_type=str, when_used="always"),
    WithJsonSchema({"type": "string", "pattern": DECIMAL_PATTERN, "examples": ["12.50"]}),
]


def _iso(value: datetime) -> str:
    return value.isoformat()


# Timestamps travel as `datetime.isoformat()` ("2025-01-02T03:04:05+00:00"), as the producers write them today.
Timestamp = Annotated[AwareDatetime, PlainSerializer(_iso, return_type=str, when_used="always")]

PositiveDecimal = Annotated[DecimalText, Field(gt=0)]
NonNegativeDecimal = Annotated[DecimalText, Field(ge=0)]
Fraction = Annotated[DecimalText, Field(ge=0, le=1)]

Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
# A token subject (a user id `usr_<hex>`, a service client id `svc_<name>_<hex>`): printable, no spaces, no NUL.
PrincipalId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")]
Text = Annotated[str, Field(max_length=2_000)]


class Contract(BaseModel):
    """A frozen wire model that refuses unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Message(Contract):
    """The payload of one Kafka message type (the envelope carries `TYPE` and `SCHEMA_VERSION`)."""

    TYPE: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int] = 1


class MirrorValue(Contract):
    """A value mirrored to Redis (JSON unless the subclass says otherwise)."""

    def to_mirror(self) -> str:
        """The Redis value: JSON with sorted keys, as the mirrors have always written it."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    @classmethod
    def parse_mirror(cls, raw: str) -> Self:
        """Parse a Redis value; raises pydantic's ValidationError when it breaks the contract."""
        return cls.model_validate_json(raw)


def outbox_payload(message: BaseModel) -> dict[str, JsonValue]:
    """The envelope payload of `message`: its JSON form (decimals as strings, timestamps ISO 8601)."""
    return message.model_dump(mode="json")
