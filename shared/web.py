"""Route helpers every service shares: role aliases, bounded path/query/text types, error responses, pages.

The types say in the OpenAPI document what the handler accepts: identifiers have a pattern and a length,
free text carries no NUL or control character (PostgreSQL refuses NUL in text and JSONB), pagination
cursors fit a BIGINT, and every non-2xx a route answers is declared with the common error body.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Path, Query
from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from shared.auth.dependencies import authorize, get_principal
from shared.auth.roles import Role, Scope
from shared.auth.tokens import Principal
from shared.errors import ErrorResponse

# Who may call what: one tuple per duty, named once (docs/security.md). No role implies another.
READERS = (Role.VIEWER, Role.OPERATOR, Role.RISK, Role.DIRECTOR, Role.ADMIN, Role.AUDITOR, Role.SERVICE)
TRADERS = (Role.OPERATOR, Role.SERVICE)
FUNDERS = (Role.OPERATOR, Role.ADMIN)
ADMINS = (Role.ADMIN,)
KEY_HOLDERS = (Role.ADMIN, Role.DIRECTOR)
# Hedge overrides, policies and re-arming; kill switch, safe mode and resume.
STEWARDS = (Role.RISK, Role.DIRECTOR)
RISK_OFFICERS = (Role.RISK,)
STOP_MOVERS = (Role.OPERATOR, Role.RISK)
# Approval policies and the approval inbox.
GOVERNORS = (Role.DIRECTOR, Role.ADMIN)
APPROVAL_READERS = (Role.DIRECTOR, Role.ADMIN, Role.AUDITOR)
REQUESTERS = (Role.OPERATOR, Role.RISK, Role.SERVICE, Role.DIRECTOR, Role.ADMIN)
DIRECTORS = (Role.DIRECTOR,)
# Backtests and sweeps: traders and directors submit, every reader reads.
BACKTESTERS = (Role.OPERATOR, Role.DIRECTOR)
# Admins make most audited changes, so reading the log is a separate grant.
AUDIT_READERS = (Role.AUDITOR,)

# Each alias is a duty (roles) and the scope its routes need: the caller holds one of the roles AND the scope,
# and the handler sees only the admitted roles' account grants (shared.auth.dependencies.authorize).
DUTIES: dict[str, tuple[tuple[Role, ...], Scope]] = {
    "OrderReader": (READERS, Scope.ORDERS_READ),
    "PortfolioReader": (READERS, Scope.ACCOUNTS_READ),
    "AccountReader": (READERS, Scope.ACCOUNTS_READ),
    "RiskReader": (READERS, Scope.RISK_READ),
    "HedgeReader": (READERS, Scope.HEDGE_READ),
    "Trader": (TRADERS, Scope.ORDERS_WRITE),
    "Funder": (FUNDERS, Scope.FUNDS_WRITE),
    "UserAdmin": (ADMINS, Scope.USERS_WRITE),
    "UserReader": (ADMINS, Scope.USERS_READ),
    "AccountAdmin": (ADMINS, Scope.ACCOUNTS_WRITE),
    "KeyWriter": (KEY_HOLDERS, Scope.KEYS_WRITE),
    "KeyReader": (KEY_HOLDERS, Scope.KEYS_READ),
    "HedgeSteward": (STEWARDS, Scope.HEDGE_WRITE),
    "StateSteward": (STEWARDS, Scope.KILL_SWITCH_WRITE),
    "RiskOfficer": (RISK_OFFICERS, Scope.RISK_WRITE),
    "StopMover": (STOP_MOVERS, Scope.EXITS_WRITE),
    "PolicyReader": (GOVERNORS, Scope.APPROVALS_READ),
    "PolicyWriter": (GOVERNORS, Scope.APPROVAL_POLICIES_WRITE),
    "ApprovalReader": (APPROVAL_READERS, Scope.APPROVALS_READ),
    "Requester": (REQUESTERS, Scope.APPROVALS_REQUEST),
    "Director": (DIRECTORS, Scope.APPROVALS_WRITE),
    "AuditReader": (AUDIT_READERS, Scope.AUDIT_READ),
    "ReportReader": (READERS, Scope.REPORTS_READ),
    "MarketDataReader": (READERS, Scope.MARKET_DATA_READ),
    "BacktestReader": (READERS, Scope.BACKTESTS_READ),
    "Backtester": (BACKTESTERS, Scope.BACKTESTS_WRITE),
}

# Any signed-in caller (no role or scope); enrollment tokens are refused.
Anyone = Annotated[Principal, Depends(get_principal)]
OrderReader = Annotated[Principal, Depends(authorize(*DUTIES["OrderReader"]))]
# Positions and balances.
PortfolioReader = Annotated[Principal, Depends(authorize(*DUTIES["PortfolioReader"]))]
AccountReader = Annotated[Principal, Depends(authorize(*DUTIES["AccountReader"]))]
RiskReader = Annotated[Principal, Depends(authorize(*DUTIES["RiskReader"]))]
HedgeReader = Annotated[Principal, Depends(authorize(*DUTIES["HedgeReader"]))]
Trader = Annotated[Principal, Depends(authorize(*DUTIES["Trader"]))]
Funder = Annotated[Principal, Depends(authorize(*DUTIES["Funder"]))]
UserAdmin = Annotated[Principal, Depends(authorize(*DUTIES["UserAdmin"]))]
UserReader = Annotated[Principal, Depends(authorize(*DUTIES["UserReader"]))]
AccountAdmin = Annotated[Principal, Depends(authorize(*DUTIES["AccountAdmin"]))]
KeyWriter = Annotated[Principal, Depends(authorize(*DUTIES["KeyWriter"]))]
KeyReader = Annotated[Principal, Depends(authorize(*DUTIES["KeyReader"]))]
HedgeSteward = Annotated[Principal, Depends(authorize(*DUTIES["HedgeSteward"]))]
StateSteward = Annotated[Principal, Depends(authorize(*DUTIES["StateSteward"]))]
RiskOfficer = Annotated[Principal, Depends(authorize(*DUTIES["RiskOfficer"]))]
StopMover = Annotated[Principal, Depends(authorize(*DUTIES["StopMover"]))]
PolicyReader = Annotated[Principal, Depends(authorize(*DUTIES["PolicyReader"]))]
PolicyWriter = Annotated[Principal, Depends(authorize(*DUTIES["PolicyWriter"]))]
ApprovalReader = Annotated[Principal, Depends(authorize(*DUTIES["ApprovalReader"]))]
Requester = Annotated[Principal, Depends(authorize(*DUTIES["Requester"]))]
Director = Annotated[Principal, Depends(authorize(*DUTIES["Director"]))]
AuditReader = Annotated[Principal, Depends(authorize(*DUTIES["AuditReader"]))]
ReportReader = Annotated[Principal, Depends(authorize(*DUTIES["ReportReader"]))]
# Stored market data: trades, candles, book snapshots, feed health (services/analytics).
MarketDataReader = Annotated[Principal, Depends(authorize(*DUTIES["MarketDataReader"]))]
BacktestReader = Annotated[Principal, Depends(authorize(*DUTIES["BacktestReader"]))]
Backtester = Annotated[Principal, Depends(authorize(*DUTIES["Backtester"]))]

# Identifiers: a letter or digit first, then letters, digits and `._:-`; never a control character.
IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
IDENTIFIER_MAX_LENGTH = 64
HEX32_PATTERN = r"^[0-9a-f]{32}$"
SYMBOL_PATTERN = r"^[A-Z0-9]+/[A-Z0-9]+$"
# Free text: anything printable, tabs and line breaks; no NUL, no other C0 control, no DEL.
SAFE_TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
# The same with at least one character that is not white space (a reason that says something).
NON_BLANK_TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
# A BIGINT: what a keyset cursor is compared with in PostgreSQL.
CURSOR_MAX = 2**63 - 1
PAGE_LIMIT_MAX = 500


def encodable(value: str) -> str:
    """Refuse lone surrogates (JSON lets `"\\ud800"` through; UTF-8, and so PostgreSQL, cannot store it)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return encodable(value)


def safe_text(*, min_length: int = 0, max_length: int, strip: bool = False) -> Any:
    """A bounded free-text type without NUL or control characters (use as `Annotated[str, safe_text(...)]`)."""
    return StringConstraints(
        strip_whitespace=strip, min_length=min_length, max_length=max_length, pattern=SAFE_TEXT_PATTERN
    )


def _json_integer(value: object) -> object:
    # Pydantic's lax int takes `true` and `"3"`; JSON Schema's "integer" takes neither (`3.0` both take).
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON integer")
    return value


# An integer in a JSON body as the schema means it. Put it after the bounds, `Annotated[int, Field(ge=0),
# JsonInteger]`: placed before them, pydantic can no longer write the bounds into the schema.
JsonInteger = BeforeValidator(_json_integer)
Encodable = AfterValidator(encodable)
# Secrets and passwords: any character a person can type except NUL (a pattern would leak nothing, but control
# characters are legitimate in generated secrets); bounded.
Secret = Annotated[str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_no_nul)]
SafeText = Annotated[str, safe_text(max_length=500), Encodable]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=NON_BLANK_TEXT_PATTERN), Encodable]
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=IDENTIFIER_MAX_LENGTH, pattern=IDENTIFIER_PATTERN)
]
SymbolText = Annotated[
    str, StringConstraints(min_length=3, max_length=32, pattern=SYMBOL_PATTERN), Field(examples=["BTC/USD"])
]
# The schema of a map keyed by symbol: pydantic writes the key pattern as `patternProperties` only, which lets
# any other key through in the schema; this names the keys and closes the map.
SYMBOL_KEYS_SCHEMA: dict[str, Any] = {
    "propertyNames": {"minLength": 3, "maxLength": 32, "pattern": SYMBOL_PATTERN},
    "additionalProperties": False,
}
AssetText = Annotated[
    str, StringConstraints(min_length=1, max_length=16, pattern=r"^[A-Z0-9]+$"), Field(examples=["USD"])
]

# Path parameters.
AccountIdPath = Annotated[str, Path(min_length=1, max_length=IDENTIFIER_MAX_LENGTH, pattern=IDENTIFIER_PATTERN)]
OrderIdPath = Annotated[str, Path(min_length=1, max_length=IDENTIFIER_MAX_LENGTH, pattern=IDENTIFIER_PATTERN)]
UserIdPath = Annotated[str, Path(min_length=1, max_length=IDENTIFIER_MAX_LENGTH, pattern=IDENTIFIER_PATTERN)]
RequestIdPath = Annotated[str, Path(min_length=1, max_length=IDENTIFIER_MAX_LENGTH, pattern=IDENTIFIER_PATTERN)]
BracketIdPath = Annotated[str, Path(min_length=32, max_length=32, pattern=HEX32_PATTERN)]

# Query parameters.
AccountIdQuery = Annotated[
    str | None, Query(min_length=1, max_length=IDENTIFIER_MAX_LENGTH, pattern=IDENTIFIER_PATTERN)
]
OrderIdQuery = Annotated[str | None, Query(min_length=1, max_length=IDENTIFIER_MAX_LENGTH, pattern=IDENTIFIER_PATTERN)]
SymbolQuery = Annotated[str | None, Query(min_length=3, max_length=32, pattern=SYMBOL_PATTERN)]
NameQuery = Annotated[str | None, Query(min_length=1, max_length=200, pattern=SAFE_TEXT_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX, description="page size")]
# An opaque cursor this API returned (URL-safe base64), bounded.
# RFC 3339 date-times in a query, with their offset: pydantic alone would also read a bare number as a Unix time.
DATETIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}"
_DATETIME_TEXT = re.compile(DATETIME_PATTERN)


def _rfc3339_text(value: object) -> object:
    if isinstance(value, str) and not _DATETIME_TEXT.match(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-01-31T12:00:00Z")
    return value


# The pattern goes into the schema (json_schema_extra) and is checked on the text before parsing: FastAPI's
# `Query(pattern=...)` cannot be applied to a datetime and would answer 500.
DateTimeQuery = Annotated[
    AwareDatetime | None, Query(json_schema_extra={"pattern": DATETIME_PATTERN}), BeforeValidator(_rfc3339_text)
]
# A time range in a query, `from` (inclusive) and `to` (exclusive); the route checks from <= to and names the field.
FromQuery = Annotated[
    AwareDatetime | None,
    Query(alias="from", json_schema_extra={"pattern": DATETIME_PATTERN}, description="start, inclusive (RFC 3339)"),
    BeforeValidator(_rfc3339_text),
]
ToQuery = Annotated[
    AwareDatetime | None,
    Query(alias="to", json_schema_extra={"pattern": DATETIME_PATTERN}, description="end, exclusive (RFC 3339)"),
    BeforeValidator(_rfc3339_text),
]
# The same check for a required date-time query parameter declared in the route (with its own `Query(alias=...)`).
RFC3339_TEXT = BeforeValidator(_rfc3339_text)
OpaqueCursor = Annotated[str | None, Query(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_=-]+$")]
Cursor = Annotated[
    int, Query(ge=0, le=CURSOR_MAX, description="the `next_cursor` of the previous page; 0 for the first")
]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: each status it may answer besides the common ones, with the error body."""
    return {code: {"model": ErrorResponse} for code in codes}


ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    """One page of a list, newest or oldest first as the route says, with the cursor of the next page."""

    model_config = ConfigDict(extra="forbid")

    items: list[ItemT]
    next_cursor: str | None = Field(
        default=None, description="pass as `cursor` to read the next page; null on the last page"
    )


# Bounded JSON: what a free-form object (an approval payload, audit details) may hold before it is stored, and
# what a reader shows in place of a stored one that breaks the bounds (a row an older version let in).
# RFC 8785 hashes numbers as IEEE doubles: from 2^53 on two different integers would hash alike.
SAFE_INTEGER = 2**53 - 1
UNREADABLE_JSON_CODE = "stored_json_unreadable"
_SAFE_TEXT = re.compile(SAFE_TEXT_PATTERN)


@dataclass(frozen=True, slots=True)
class JsonBounds:
    """Depth (the object itself is level 1), entries per object or array, text and key lengths, encoded bytes."""

    max_depth: int
    max_entries: int
    max_text: int
    max_key: int
    max_bytes: int


def _check_text(value: str, limit: int, where: str) -> None:
    if len(value) > limit or not _SAFE_TEXT.match(value):
        raise ValueError(f"{where}: text longer than {limit} characters or with control characters")
    encodable(value)


def _check_value(value: object, bounds: JsonBounds, level: int, where: str) -> None:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, str):
        _check_text(value, bounds.max_text, where)
    elif isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > SAFE_INTEGER:
            raise ValueError(f"{where}: numbers must be finite and within +-(2^53 - 1)")
    elif isinstance(value, list | dict):
        if level >= bounds.max_depth:
            raise ValueError(f"{where}: nested deeper than {bounds.max_depth} levels")
        _check_container(value, bounds, level + 1, where)
    else:
        raise ValueError(f"{where}: not a JSON value")


def _check_container(value: list[Any] | dict[Any, Any], bounds: JsonBounds, level: int, where: str) -> None:
    if len(value) > bounds.max_entries:
        raise ValueError(f"{where}: more than {bounds.max_entries} entries")
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(item, bounds, level, f"{where}[{index}]")
        return
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValueError(f"{where}: keys must be text")
        _check_text(key, bounds.max_key, f"{where} key")
        _check_value(item, bounds, level, f"{where}.{key[:40]}")


def check_json_object(value: object, bounds: JsonBounds, where: str = "payload") -> dict[str, Any]:
    """`value` when it is a JSON object within `bounds` (no NaN, no number beyond 2^53); ValueError otherwise."""
    if not isinstance(value, dict):
        raise ValueError(f"{where}: must be a JSON object")
    _check_container(value, bounds, 1, where)
    if len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode()) > bounds.max_bytes:
        raise ValueError(f"{where}: larger than {bounds.max_bytes} bytes")
    return value


def unreadable_json(reason: str) -> dict[str, Any]:
    """The opaque marker a reader shows instead of a stored JSON object it cannot show."""
    return {"unreadable": True, "code": UNREADABLE_JSON_CODE, "reason": reason}


def readable_json(value: object, bounds: JsonBounds) -> dict[str, Any]:
    """A stored JSON object as a reader may show it: itself within `bounds`, otherwise an opaque marker with a
    code (never a 500 on a row an older version let in)."""
    try:
        return check_json_object(value, bounds, "stored")
    except ValueError as exc:
        return unreadable_json(str(exc)[:200])
    except RecursionError:
        return unreadable_json("nested too deep to read")


def readable_json_text(text: str, bounds: JsonBounds) -> dict[str, Any]:
    """`readable_json` of a stored JSON text (a text that does not even load reads as the marker too)."""
    try:
        loaded = json.loads(text)
    except (ValueError, RecursionError):
        return unreadable_json("the stored text is not JSON this reader can load")
    return readable_json(loaded, bounds)


# A service that takes credentials on a person's behalf (the director inbox) relays that person's address to the
# accounts service in CLIENT_ADDRESS_HEADER, proved by its own service token (scope RELAY_SCOPE) in
# RELAY_TOKEN_HEADER, so that each person keeps their own rate-limit counters (docs/security.md).
CLIENT_ADDRESS_HEADER = "X-Aether-Client-Address"
RELAY_TOKEN_HEADER = "X-Aether-Relay-Token"  # noqa: S105 - a header name, not a secret
RELAY_SCOPE = Scope.AUTH_RELAY_CLIENT
