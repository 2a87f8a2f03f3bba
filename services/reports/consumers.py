"""Background work of the reports service: the audit anchoring job (Kafka handlers arrive with reports)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from shared.app_factory import BackgroundWorker, ServiceRuntime
from shared.audit.anchors import AnchorPolicy, AnchorSettings, anchor_due_chains, load_signer
from shared.config import ConfigurationError
from shared.db import UnitOfWork
from shared.observability.logging import get_logger

log = get_logger(__name__)


def anchoring_worker(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    """Every `audit_anchor_poll_s`, sign and publish an anchor for each chain that is due (N entries or T seconds)."""

    async def run() -> None:
        settings = runtime.settings
        if not isinstance(settings, AnchorSettings):
            raise ConfigurationError("the anchoring job needs AnchorSettings (AETHER_AUDIT_ANCHOR_*)")
        signer = load_signer(settings)  # fails loudly (and is retried by the supervisor) without a key
        policy = AnchorPolicy(every_entries=settings.audit_anchor_every_entries, every_s=settings.audit_anchor_every_s)
        interval_s = min(settings.audit_anchor_poll_s, settings.audit_anchor_every_s)
        while not runtime.stop_event.is_set():
            async with UnitOfWork(runtime.sessionmaker) as uow:
                anchors = await anchor_due_chains(uow.session, signer, runtime.tables, policy)
            if anchors:
                log.info("audit_anchored", chains=len(anchors), newest=max(a.length for a in anchors))
                runtime.relay.wake()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.stop_event.wait(), timeout=interval_s)

    return run


# (name, worker factory) pairs started by the app's lifespan.
WORKERS: Sequence[tuple[str, BackgroundWorker]] = (("audit-anchoring", anchoring_worker),)
