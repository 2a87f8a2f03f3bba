"""Route helpers every service shares: role aliases, bounded path/query/text types, error responses, pages.

The types say in the OpenAPI document what the handler accepts: identifiers have a pattern and a length,
free text carries no NUL or control character (PostgreSQL refuses NUL in text and JSONB), pagination
cursors fit a BIGINT, and every non-2xx a route answers is declared with the common error body.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Path, Query
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from shared.auth.dependencies import get_principal, require_roles
from shared.auth.roles import Role
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
# Admins make most audited changes, so reading the log is a separate grant.
AUDIT_READERS = (Role.AUDITOR,)

Anyone = Annotated[Principal, Depends(get_principal)]
Reader = Annotated[Principal, Depends(require_roles(*READERS))]
Trader = Annotated[Principal, Depends(require_roles(*TRADERS))]
Funder = Annotated[Principal, Depends(require_roles(*FUNDERS))]
Admin = Annotated[Principal, Depends(require_roles(*ADMINS))]
KeyHolder = Annotated[Principal, Depends(require_roles(*KEY_HOLDERS))]
Steward = Annotated[Principal, Depends(require_roles(*STEWARDS))]
RiskOfficer = Annotated[Principal, Depends(require_roles(*RISK_OFFICERS))]
StopMover = Annotated[Principal, Depends(require_roles(*STOP_MOVERS))]
Governor = Annotated[Principal, Depends(require_roles(*GOVERNORS))]
ApprovalReader = Annotated[Principal, Depends(require_roles(*APPROVAL_READERS))]
Requester = Annotated[Principal, Depends(require_roles(*REQUESTERS))]
Director = Annotated[Principal, Depends(require_roles(*DIRECTORS))]
AuditReader = Annotated[Principal, Depends(require_roles(*AUDIT_READERS))]

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


# A service that takes credentials on a person's behalf (the director inbox) relays that person's address to the
# accounts service in CLIENT_ADDRESS_HEADER, proved by its own service token (scope RELAY_SCOPE) in
# RELAY_TOKEN_HEADER, so that each person keeps their own rate-limit counters (docs/security.md).
CLIENT_ADDRESS_HEADER = "X-Aether-Client-Address"
RELAY_TOKEN_HEADER = "X-Aether-Relay-Token"  # noqa: S105 - a header name, not a secret
RELAY_SCOPE = "auth:relay_client"
