"""Kafka handlers of the analytics service; each is idempotent through the `analytics.inbox` table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from data.features.worker import FeatureWorker
from shared.app_factory import BackgroundWorker, ServiceRuntime, run_consumer
from shared.marketdata import BOOK_TOPIC, TRADE_TOPIC


# --- features (issue 14, item 4): the streaming feature engine over marketdata.* ----------------------------
def _features(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        worker = FeatureWorker(runtime.tables)  # fresh state on every (re)start: see data/features/worker.py
        await run_consumer(runtime, name="analytics.features", topics=[BOOK_TOPIC, TRADE_TOPIC], handler=worker.handle)

    return run


# (name, worker factory) pairs started by the app's lifespan; filled as the service gains consumers.
WORKERS: Sequence[tuple[str, BackgroundWorker]] = (("features", _features),)
