"""Canonical JSON for audit entries: RFC 8785 (JCS) bytes over a value domain that survives a jsonb round trip.

The bytes come from `rfc8785` (Trail of Bits' implementation of the JSON Canonicalization Scheme): sorted keys,
no whitespace, UTF-8, ECMAScript number formatting. Using the RFC rather than an ad-hoc `json.dumps` profile lets
an auditor recompute the hashes with any JCS implementation, in any language.

Before canonicalization, values are normalized to plain JSON so that what PostgreSQL stores in `jsonb` and gives
back produces the same bytes again: Decimal -> str (scale kept: "1.50"), aware datetime -> ISO 8601 UTC with
microseconds, date -> ISO date, UUID -> str, tuple -> list. Refused: NaN and infinities, floats and ints outside
+/-(2**53 - 1) (jsonb gives `1e20` back as an integer, so such a float would not hash the same after the round
trip; pass a Decimal or a str), naive datetimes, non-str mapping keys, NUL characters (PostgreSQL text cannot hold
them) and any other type.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TypeAlias
from uuid import UUID

import rfc8785

JsonValue: TypeAlias = (
    str
    | int
    | float
    | bool
    | Decimal
    | datetime
    | date
    | UUID
    | Sequence["JsonValue"]
    | Mapping[str, "JsonValue"]
    | None
)
"""What an audit entry may carry; Decimal, datetime, date and UUID are converted to strings."""

PlainJson: TypeAlias = str | int | float | bool | list["PlainJson"] | dict[str, "PlainJson"] | None
"""Plain JSON, as stored in `jsonb` and read back."""

MAX_SAFE_INTEGER = 2**53 - 1


class CanonicalizationError(ValueError):
    """A value that the audit log cannot store and hash deterministically."""


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds, e.g. `2025-01-02T03:04:05.000006Z` (PostgreSQL keeps microseconds)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise CanonicalizationError("naive datetime refused: audit timestamps must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _normalize_str(value: str) -> str:
    if "\x00" in value:
        raise CanonicalizationError("NUL character refused: PostgreSQL text and jsonb cannot store it")
    return value


def _normalize_number(value: int | float) -> int | float:
    if isinstance(value, float) and not math.isfinite(value):
        raise CanonicalizationError(f"{value!r} refused: NaN and infinities have no JSON form")
    if abs(value) > MAX_SAFE_INTEGER:
        raise CanonicalizationError(f"{value!r} is outside +/-(2**53 - 1): pass a Decimal or a str")
    return value


def _normalize_decimal(value: Decimal) -> str:
    if not value.is_finite():
        raise CanonicalizationError(f"Decimal {value} refused: NaN and infinities have no JSON form")
    return str(value)


def to_plain_json(value: object) -> PlainJson:
    """Normalize `value` to plain JSON (see the module docstring); raise CanonicalizationError when it cannot be."""
    # bool before int: bool is an int subclass.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _normalize_str(value)
    if isinstance(value, int | float):
        return _normalize_number(value)
    if isinstance(value, Decimal):
        return _normalize_decimal(value)
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Mapping):
        return _normalize_mapping(value)
    if isinstance(value, list | tuple):
        return [to_plain_json(item) for item in value]
    raise CanonicalizationError(f"{type(value).__name__} is not an audit JSON value")


def _normalize_mapping(value: Mapping[object, object]) -> dict[str, PlainJson]:
    result: dict[str, PlainJson] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise CanonicalizationError(f"mapping key {key!r} refused: keys must be str")
        result[_normalize_str(key)] = to_plain_json(item)
    return result


def canonical_json(value: object) -> bytes:
    """RFC 8785 canonical JSON bytes of `value` after normalization; raise CanonicalizationError when impossible."""
    plain = to_plain_json(value)
    try:
        return rfc8785.dumps(plain)
    except rfc8785.CanonicalizationError as exc:  # e.g. lone surrogates, which are not UTF-8
        raise CanonicalizationError(str(exc)) from exc
