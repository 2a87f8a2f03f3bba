"""The body size middleware counts the bytes that arrive, whatever Content-Length says, and answers 413."""

from __future__ import annotations

import json

from starlette.types import Message, Receive, Scope, Send

from shared.body_limit import BodySizeLimitMiddleware


class Recorder:
    """An ASGI app that records the body it was given."""

    def __init__(self) -> None:
        self.body: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self.body = b"".join(chunks)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def scope(path: str, content_length: int | None = None) -> Scope:
    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    return {"type": "http", "method": "POST", "path": path, "headers": headers}


async def call(app: BodySizeLimitMiddleware, scope: Scope, chunks: list[bytes]) -> tuple[int, dict[str, object], int]:
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    pulled = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal pulled
        pulled += 1
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body) if body else {}, pulled


async def test_a_streamed_body_over_the_limit_is_refused_without_reading_the_rest() -> None:
    inner = Recorder()
    app = BodySizeLimitMiddleware(inner, default_bytes=1_000_000, limits={"/auth/login": 100})
    status, body, pulled = await call(app, scope("/auth/login", content_length=10), [b"x" * 60] * 50)
    assert status == 413
    assert body["error"]["code"] == "body_too_large"  # type: ignore[index]
    assert pulled == 2  # stopped at the chunk that crossed the limit
    assert inner.body is None  # the app never ran


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    inner = Recorder()
    app = BodySizeLimitMiddleware(inner, default_bytes=50)
    status, _, pulled = await call(app, scope("/anything", content_length=51), [b"x" * 51])
    assert (status, pulled, inner.body) == (413, 0, None)


async def test_a_body_within_the_limit_reaches_the_app_whole() -> None:
    inner = Recorder()
    app = BodySizeLimitMiddleware(inner, default_bytes=10, limits={"/big": 1_000})
    status, _, _ = await call(app, scope("/big"), [b"a" * 400, b"b" * 400])
    assert status == 200
    assert inner.body == b"a" * 400 + b"b" * 400
