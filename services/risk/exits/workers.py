"""Background workers of the exit brackets, started by the risk service's lifespan."""

from __future__ import annotations

from collections.abc import Sequence

from shared.app_factory import BackgroundWorker

WORKERS: Sequence[tuple[str, BackgroundWorker]] = ()
