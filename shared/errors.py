"""Error model shared by every service: domain errors carry their HTTP status and a machine-readable code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticCustomError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from shared.observability.logging import get_logger

log = get_logger(__name__)


# A rule between fields that a JSON Schema cannot state (one value against another): the request matches its schema
# and still breaks a business rule, so it answers 422 `rule_violation`, not `validation_error` (S1 tells them apart).
RULE_VIOLATION = "rule_violation"


def rule_violation(message: str) -> PydanticCustomError:
    """Raise from a model validator for a cross-field rule; the message names the field at fault first."""
    return PydanticCustomError(RULE_VIOLATION, message)


class DomainError(Exception):
    """An expected business outcome that is not a success; never a 5xx unless the platform itself failed."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "domain_error"

    def __init__(self, message: str, *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class Unprocessable(DomainError):
    status_code = 422
    code = "unprocessable"


class ServiceUnavailable(DomainError):
    status_code = 503
    code = "service_unavailable"


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    """Body of every non-2xx response."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorBody


def error_response(
    status_code: int, code: str, message: str, details: Any = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = jsonable_encoder(details)
    return JSONResponse({"error": body}, status_code=status_code, headers=dict(headers or {}))


# The statuses every route may answer besides its own; declared on routes so the OpenAPI document is honest.
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed request (e.g. invalid JSON)"},
    401: {"model": ErrorResponse, "description": "Missing or invalid bearer token"},
    403: {"model": ErrorResponse, "description": "The token lacks the role or scope"},
    413: {"model": ErrorResponse, "description": "The request body is over the route's size limit"},
    422: {"model": ErrorResponse, "description": "The request does not satisfy the schema"},
    429: {"model": ErrorResponse, "description": "Over the caller's rate limit for this route class (Retry-After)"},
}


_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


def _describe_validation(errors: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {
            "field": ".".join(str(part) for part in error.get("loc", ())),
            "message": str(error.get("msg", "")),
            "type": error.get("type"),
        }
        for error in errors
    ]


async def _handle_domain_error(_: Request, exc: DomainError) -> JSONResponse:
    return error_response(exc.status_code, exc.code, exc.message, exc.details or None)


async def _handle_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    fields = _describe_validation(exc.errors())
    if any(field["type"] == "json_invalid" for field in fields):
        return error_response(400, "malformed_json", "the request body is not valid JSON", {"fields": fields})
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    details: dict[str, Any] = {"fields": fields}
    code = RULE_VIOLATION if fields and all(f["type"] == RULE_VIOLATION for f in fields) else "validation_error"
    if fields:
        # Like the domain errors' `details.field`: the first field at fault, without its location (body, query).
        first = [str(part) for part in exc.errors()[0].get("loc", ())]
        details["field"] = ".".join(first[1:] if first and first[0] in _LOCATIONS else first)
    return error_response(422, code, summary or "invalid request", details)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers at this path (a path may be served by several routes)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


async def _handle_http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail
    if exc.status_code == 405:
        # Starlette names the methods of the first route that matched the path only (RFC 9110 15.5.6: all of them).
        headers = {**(exc.headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return error_response(405, "method_not_allowed", str(detail), headers=headers)
    if isinstance(detail, dict) and "code" in detail:
        return error_response(exc.status_code, str(detail["code"]), str(detail.get("message", "")), headers=exc.headers)
    code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}.get(
        exc.status_code, "http_error"
    )
    return error_response(exc.status_code, code, str(detail), headers=exc.headers)


BACKEND_UNAVAILABLE = "backend_unavailable"
_REDIS_OUTAGES: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)
# PostgreSQL unreachable, its connection lost (refused, reset, cut mid-query) or a transient failure (psycopg's
# OperationalError family: also deadlocks and serialization failures), the pool exhausted; Redis down.
_BACKEND_OUTAGES: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeoutError, *_REDIS_OUTAGES)


async def _handle_backend_outage(request: Request, exc: Exception) -> JSONResponse:
    backend = "redis" if isinstance(exc, _REDIS_OUTAGES) else "postgresql"
    log.warning("backend_unavailable", path=request.url.path, backend=backend, error_type=type(exc).__name__)
    return error_response(
        503,
        BACKEND_UNAVAILABLE,
        f"{backend} is unavailable; retry later (an order sent again with the same client_order_id is placed once)",
        {"backend": backend},
    )


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled_error", path=request.url.path, error_type=type(exc).__name__, exc_info=exc)
    return error_response(500, "internal_error", "internal error; the correlation id identifies it in the logs")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _handle_domain_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _handle_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _handle_http_exception)  # type: ignore[arg-type]
    for outage in _BACKEND_OUTAGES:
        app.add_exception_handler(outage, _handle_backend_outage)
    app.add_exception_handler(Exception, _handle_unexpected)
