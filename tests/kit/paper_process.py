"""The paper venue process for tests: `services.paper` under a real uvicorn server on a local port, and the
`PaperHttpVenue` the OMS would use to reach it (authenticated with the test key's `venue:trade` service token)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from services.paper.adapters import PaperAdapters, paper_adapters
from services.paper.app import create_app
from services.paper.config import PaperSettings
from shared.auth.roles import Role, Scope
from shared.clock import utc_now
from shared.config import AetherSettings
from shared.venues.paper import PaperVenue
from shared.venues.paper_http import PaperHttpVenue
from tests.helpers import eventually
from tests.kit.auth import bearer, jwt_settings

# What the OMS's service identity holds: trading on the venue for every account.
VENUE_TOKEN = bearer(Role.SERVICE, subject="svc_oms-venue-client", scopes=[Scope.VENUE_TRADE])


async def venue_token() -> str:
    return VENUE_TOKEN


def paper_settings(settings: AetherSettings, **overrides: Any) -> PaperSettings:
    """Venue settings for a test: the test key, quiet logs, market-data topics of its own unless given."""
    fields: dict[str, Any] = {
        **jwt_settings(),
        "log_level": "WARNING",
        "marketdata_book_topic": f"test.paper-book.{uuid.uuid4().hex[:10]}.v1",
        "marketdata_trade_topic": f"test.paper-trade.{uuid.uuid4().hex[:10]}.v1",
        **overrides,
    }
    return PaperSettings(**settings.model_dump(exclude={"service_name", "jwt_private_key", *fields}), **fields)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PaperProcess:
    """A running paper venue app, reachable at `url`."""

    app: FastAPI
    url: str

    @property
    def adapters(self) -> PaperAdapters:
        return paper_adapters(self.app.state.runtime)

    @property
    def venue(self) -> PaperVenue:
        return self.adapters.venue


@asynccontextmanager
async def paper_process(
    settings: PaperSettings,
    *,
    port: int | None = None,
    clock: Callable[[], datetime] = utc_now,
    network: Callable[[ASGIApp], ASGIApp] | None = None,
) -> AsyncIterator[PaperProcess]:
    """Serve the venue on `port` (a free one by default) until the block ends; yields once /readyz is 200.
    `network` wraps the app as the network between it and its callers behaves (e.g. `SlowAnswers`)."""
    app = create_app(settings, clock=clock)
    port = port or free_port()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    served: ASGIApp = app if network is None else network(app)
    config = uvicorn.Config(served, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=2.0) as probe:

            async def ready() -> bool:
                if serving.done():
                    serving.result()  # a failed start fails the test at once
                try:
                    return (await probe.get("/readyz")).status_code == 200
                except httpx.TransportError:  # not listening yet
                    return False

            await eventually(ready, timeout_s=30, message=f"paper venue at {url} ready")
        yield PaperProcess(app, url)
    finally:
        server.should_exit = True
        await serving
        listener.close()


@asynccontextmanager
async def following(venue: PaperHttpVenue) -> AsyncIterator[PaperHttpVenue]:
    """Run `venue.follow` (its update stream) for the block, once connected; close the client after."""
    stop = asyncio.Event()
    task = asyncio.create_task(venue.follow(stop))
    try:
        await eventually(_connected(venue), timeout_s=20, message="venue stream connected")
        yield venue
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
        await venue.close()


def _connected(venue: PaperHttpVenue) -> Callable[[], Any]:
    async def probe() -> bool:
        return venue.connected.is_set()

    return probe


async def caught_up(venue: PaperHttpVenue, process: PaperProcess) -> None:
    """Wait until `venue`'s stream has delivered every update the venue process has told so far."""
    target = process.adapters.hub.position

    async def reached() -> bool:
        return venue.connected.is_set() and venue.position >= target

    await eventually(reached, timeout_s=20, message=f"stream position {target}")


class SlowAnswers:
    """The network between the venue and its callers, slow on the way back: the answer to `method path` leaves
    `delay_s` after the venue produced it (the venue acted at once). Everything else passes untouched."""

    def __init__(self, app: ASGIApp, method: str, path: str, delay_s: float) -> None:
        self.app = app
        self.method = method
        self.path = path
        self.delay_s = delay_s
        self.delayed = 0

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != self.method or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await self.app(scope, receive, hold)
        self.delayed += 1
        await asyncio.sleep(self.delay_s)
        for message in held:
            await send(message)
