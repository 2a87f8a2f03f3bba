"""Kafka handlers of the reports service; each is idempotent through the `reports.inbox` table."""

from __future__ import annotations

from collections.abc import Sequence

from shared.app_factory import BackgroundWorker

# (name, worker factory) pairs started by the app's lifespan; filled as the service gains consumers.
WORKERS: Sequence[tuple[str, BackgroundWorker]] = ()
