"""The "last success" metric of each ops job, as a Prometheus textfile (node-exporter textfile collector format).

A CronJob's pod is gone before Prometheus could scrape it, so each job writes
`<AETHER_OPS_METRICS_DIR>/aether_ops_<job>.prom` atomically on success; node-exporter's textfile collector (or the
chart's sidecar) exposes the directory. Alert on `time() - aether_ops_last_success_timestamp_seconds > policy`.
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

LAST_SUCCESS = "aether_ops_last_success_timestamp_seconds"
LAST_BYTES = "aether_ops_last_success_bytes"


def metric_file(directory: Path, job: str) -> Path:
    return directory / f"aether_ops_{job}.prom"


def record_success(directory: Path, job: str, size_bytes: int, now: float | None = None) -> Path:
    """Write the job's last-success time and size (atomically: a temporary file renamed into place)."""
    registry = CollectorRegistry()
    Gauge(LAST_SUCCESS, "Unix time of the job's last success", ["job"], registry=registry).labels(job).set(
        time.time() if now is None else now
    )
    Gauge(LAST_BYTES, "Bytes the job's last success wrote", ["job"], registry=registry).labels(job).set(size_bytes)
    directory.mkdir(parents=True, exist_ok=True)
    path = metric_file(directory, job)
    write_to_textfile(str(path), registry)
    return path
