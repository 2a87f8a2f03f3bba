"""Request body size limits, per route, as a pure ASGI middleware applied by the app factory.

The body is read (counting the bytes that actually arrive, whatever Content-Length claims) up to the route's
limit before the app sees it; one byte more and the answer is 413 `body_too_large` without reading further. A
Content-Length over the limit is refused before anything is read. The app then receives the buffered body.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import error_response

DEFAULT_BODY_LIMIT_BYTES = 1_048_576


class BodySizeLimitMiddleware:
    """Refuse bodies over `limits[path]` (exact path) or `default_bytes` with 413."""

    def __init__(self, app: ASGIApp, default_bytes: int, limits: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.default_bytes = default_bytes
        self.limits = dict(limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default_bytes)
        if _declared_length(scope) > limit:
            await _refuse(scope, receive, send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see the disconnect
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _refuse(scope, receive, send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0  # not a number: the bytes that arrive are counted instead
    return 0


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    response = error_response(
        413,
        "body_too_large",
        f"the request body is over this route's limit of {limit} bytes",
        {"limit_bytes": limit},
        headers={"Connection": "close"},
    )
    await response(scope, receive, send)
