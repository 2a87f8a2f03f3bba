"""A Toxiproxy server for one test: proxies between a client and a real server, with toxics added and removed.

`toxiproxy_server(seed)` builds the binary when missing (`ops.stack.toxiproxy`), starts it on a free loopback
port with a fixed seed (the toxicity draws repeat), and stops it afterwards. Its HTTP API is spoken with httpx:
https://github.com/Shopify/toxiproxy#http-api.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from ops.stack.toxiproxy import toxiproxy_binary
from tests.helpers import eventually

Stream = Literal["upstream", "downstream"]


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Proxy:
    """One proxy: clients connect to `listen`, Toxiproxy forwards to `upstream` through its toxics."""

    name: str
    listen: str
    upstream: str
    api: httpx.AsyncClient

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    async def add_toxic(
        self,
        name: str,
        kind: str,
        attributes: Mapping[str, int | float],
        *,
        stream: Stream = "downstream",
        toxicity: float = 1.0,
    ) -> None:
        """Add a toxic (`latency`, `timeout`, `reset_peer`, `bandwidth`, `slicer`, `limit_data`, `slow_close`)."""
        body = {"name": name, "type": kind, "stream": stream, "toxicity": toxicity, "attributes": dict(attributes)}
        response = await self.api.post(f"/proxies/{self.name}/toxics", json=body)
        response.raise_for_status()

    async def remove_toxic(self, name: str) -> None:
        response = await self.api.delete(f"/proxies/{self.name}/toxics/{name}")
        response.raise_for_status()

    async def set_enabled(self, enabled: bool) -> None:
        """Disabled: every connection is closed and new ones are refused (a partition)."""
        response = await self.api.post(f"/proxies/{self.name}", json={"enabled": enabled})
        response.raise_for_status()


@dataclass
class Toxiproxy:
    """The server's API."""

    api: httpx.AsyncClient

    async def proxy(self, name: str, upstream: str) -> Proxy:
        """Create a proxy to `upstream` (host:port) on a free loopback port."""
        listen = f"127.0.0.1:{free_port()}"
        body = {"name": name, "listen": listen, "upstream": upstream, "enabled": True}
        response = await self.api.post("/proxies", json=body)
        response.raise_for_status()
        return Proxy(name, str(response.json()["listen"]), upstream, self.api)

    async def reset(self) -> None:
        """Remove every toxic and enable every proxy."""
        (await self.api.post("/reset")).raise_for_status()


@asynccontextmanager
async def toxiproxy_server(seed: int, log_path: Path) -> AsyncIterator[Toxiproxy]:
    """A Toxiproxy server on a free loopback port, seeded, stopped on exit."""
    binary = await asyncio.to_thread(toxiproxy_binary)
    port = free_port()
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            str(binary), "-host", "127.0.0.1", "-port", str(port), "-seed", str(seed), stdout=log, stderr=log
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:

            async def answering() -> bool:
                assert process.returncode is None, f"toxiproxy-server exited: {_tail(log_path)}"
                try:
                    return (await api.get("/version")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(answering, timeout_s=15, message="toxiproxy-server answering")
            yield Toxiproxy(api)
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), timeout=10)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2_000:]
