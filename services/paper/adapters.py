"""The paper venue process's typed composition root: what `app.py` builds once and the routes read."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from services.paper.stream import UpdateHub
from shared.app_factory import ServiceRuntime, adapters_of
from shared.venues.paper import PaperVenue


@dataclass(frozen=True, slots=True)
class PaperAdapters:
    """The venue of this process, its update stream, and whether its books were restored (requests wait for it)."""

    venue: PaperVenue
    hub: UpdateHub
    restored: asyncio.Event = field(default_factory=asyncio.Event)


def paper_adapters(runtime: ServiceRuntime) -> PaperAdapters:
    """The adapters of this runtime (a start-up bug if missing)."""
    return adapters_of(runtime, PaperAdapters)


def _from_request(request: Request) -> PaperAdapters:
    return paper_adapters(request.app.state.runtime)


Adapters = Annotated[PaperAdapters, Depends(_from_request)]
