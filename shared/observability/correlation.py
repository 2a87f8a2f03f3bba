"""Correlation ids: a ContextVar carried through requests, logs and events."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CORRELATION_HEADER = "X-Correlation-ID"
_HEADER_KEY = CORRELATION_HEADER.lower().encode("latin-1")
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)


def get_correlation_id() -> str | None:
    """Return the correlation id bound to the current context, if any."""
    return correlation_id_var.get()


def new_correlation_id() -> str:
    """Return a fresh correlation id (uuid4 hex)."""
    return uuid.uuid4().hex


def is_valid_correlation_id(value: str) -> bool:
    """Return True when value is 1-128 chars of [A-Za-z0-9._:-]."""
    return _VALID_ID.fullmatch(value) is not None


def bind_correlation_id(value: str | None) -> Token[str | None]:
    """Bind value as the current correlation id; reset with correlation_id_var.reset(token)."""
    return correlation_id_var.set(value)


def reset_correlation_id(token: Token[str | None]) -> None:
    """Restore the correlation id that was current before bind_correlation_id."""
    correlation_id_var.reset(token)


@contextmanager
def correlation_scope(value: str | None = None) -> Iterator[str]:
    """Bind value (or a fresh id) for the duration of the with-block and yield it."""
    cid = value if value is not None else new_correlation_id()
    token = correlation_id_var.set(cid)
    try:
        yield cid
    finally:
        correlation_id_var.reset(token)


def correlation_id_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """Return the request's valid X-Correlation-ID, or a fresh id when it is absent or malformed."""
    for name, value in headers:
        if name.lower() == _HEADER_KEY:
            candidate = value.decode("latin-1")
            # Only the first header counts; a malformed one is replaced, never echoed (log/header injection).
            return candidate if is_valid_correlation_id(candidate) else new_correlation_id()
    return new_correlation_id()


class CorrelationIdMiddleware:
    """Pure ASGI middleware: bind the request's correlation id for its lifetime and echo it in the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        cid = correlation_id_from_headers(scope.get("headers") or ())
        header = (_HEADER_KEY, cid.encode("latin-1"))

        async def send_with_header(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _HEADER_KEY]
                headers.append(header)
                message = {**message, "headers": headers}
            await send(message)

        token = correlation_id_var.set(cid)
        log_tokens = structlog.contextvars.bind_contextvars(correlation_id=cid)
        try:
            await self.app(scope, receive, send_with_header)
        finally:
            structlog.contextvars.reset_contextvars(**log_tokens)
            correlation_id_var.reset(token)
