"""Kafka handlers of the risk service; each is idempotent through the `risk.inbox` table."""

from __future__ import annotations

from collections.abc import Sequence

from services.risk.exits.workers import WORKERS as EXIT_WORKERS
from shared.app_factory import BackgroundWorker

# (name, worker factory) pairs started by the app's lifespan; filled as the service gains consumers.
WORKERS: Sequence[tuple[str, BackgroundWorker]] = (*EXIT_WORKERS,)
