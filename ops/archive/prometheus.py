"""Snapshot long-range Prometheus series into the archive through its HTTP API (`/api/v1/query_range`).

Each configured PromQL expression is evaluated every `step` seconds over the window (the downsampling: see
docs/operations.md, "Prometheus"); the samples go to one Parquet file (query, labels as canonical JSON, timestamp,
value), sealed and uploaded like every archive part, then read back and compared. A window already archived is
left as it is (the manifest is the commit marker), so the job may rerun safely.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import polars as pl

from ops.storage.errors import IntegrityError, OpsError
from ops.storage.s3 import ObjectStore
from ops.storage.sealed import Sealer, open_chunks, open_manifest
from shared.crypto import KeyProvider

KIND = "prometheus-snapshot"
# Prometheus refuses a query_range answer of more than 11,000 points per series.
MAX_POINTS = 10_000
SCHEMA = {"query": pl.String(), "labels": pl.String(), "timestamp": pl.Datetime("us", "UTC"), "value": pl.Float64()}


@dataclass(frozen=True, slots=True)
class SnapshotResult:
    object_id: str
    series: int
    samples: int
    skipped: bool = False


def _range(
    client: httpx.Client, base_url: str, query: str, start: datetime, end: datetime, step_s: int
) -> list[tuple[str, str, datetime, float]]:
    params = {
        "query": query,
        "start": f"{start.timestamp():.3f}",
        "end": f"{end.timestamp():.3f}",
        "step": f"{step_s}s",
    }
    url = base_url.rstrip("/") + "/api/v1/query_range"
    try:
        answer = client.get(url, params=params)
    except httpx.HTTPError as exc:
        raise OpsError(f"Prometheus at {base_url} unreachable for query {query!r}: {type(exc).__name__}") from None
    try:
        document = answer.json()
    except ValueError:
        document = {}
    if answer.status_code != 200 or document.get("status") != "success":
        reason = document.get("error") or f"HTTP {answer.status_code}"
        raise OpsError(f"Prometheus refused query {query!r}: {reason}")
    data = document.get("data", {})
    if data.get("resultType") != "matrix":
        raise OpsError(f"Prometheus query {query!r}: expected a range vector (matrix), got {data.get('resultType')!r}")
    rows: list[tuple[str, str, datetime, float]] = []
    for series in data.get("result", []):
        labels = json.dumps(series.get("metric", {}), sort_keys=True, separators=(",", ":"))
        for stamp, value in series.get("values", []):
            rows.append((query, labels, datetime.fromtimestamp(float(stamp), UTC), float(value)))
    return rows


def fetch(
    base_url: str, queries: list[str], start: datetime, end: datetime, step_s: int, timeout_s: float = 30.0
) -> pl.DataFrame:
    """Every query over [start, end] at `step_s`, cut into windows Prometheus accepts; one frame."""
    rows: list[tuple[str, str, datetime, float]] = []
    window = timedelta(seconds=step_s * MAX_POINTS)
    with httpx.Client(timeout=timeout_s) as client:
        for query in queries:
            begin = start
            while begin <= end:
                stop = min(end, begin + window)
                rows.extend(_range(client, base_url, query, begin, stop, step_s))
                begin = stop + timedelta(seconds=step_s)
    return pl.DataFrame(rows, schema=SCHEMA, orient="row").unique(maintain_order=True)


def keys(store: ObjectStore, object_id: str) -> tuple[str, str]:
    base = store.key("archive", object_id)
    return f"{base}.parquet.sealed", f"{base}.manifest.json"


def read_snapshot(store: ObjectStore, provider: KeyProvider, object_id: str) -> pl.DataFrame:
    """Download and verify a snapshot; its samples."""
    data_key, manifest_key = keys(store, object_id)
    manifest = open_manifest(provider, store.get(manifest_key), object_id, store.url(manifest_key))
    plain = b"".join(open_chunks(manifest, io.BytesIO(store.get(data_key)), store.url(data_key)))
    return pl.read_parquet(io.BytesIO(plain))


def snapshot(
    store: ObjectStore,
    provider: KeyProvider,
    base_url: str,
    queries: list[str],
    start: datetime,
    end: datetime,
    step_s: int,
    *,
    chunk_bytes: int,
    part_bytes: int,
) -> SnapshotResult:
    """Archive the window [start, end] of `queries` (idempotent per window and step)."""
    if not queries:
        raise OpsError("AETHER_PROMETHEUS_SERIES: no PromQL expression to snapshot")
    if start >= end:
        raise OpsError(f"--from {start.isoformat()} is not before --to {end.isoformat()}")
    object_id = f"prometheus/{start:%Y%m%dT%H%M%SZ}_{end:%Y%m%dT%H%M%SZ}_step{step_s}s"
    data_key, manifest_key = keys(store, object_id)
    if store.exists(manifest_key):
        done = read_snapshot(store, provider, object_id)
        return SnapshotResult(object_id, done["labels"].n_unique(), done.height, skipped=True)
    frame = fetch(base_url, queries, start, end, step_s)
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd")
    sealer = Sealer(provider, object_id, chunk_bytes)
    store.upload_stream(data_key, sealer.seal([buffer.getvalue()]), part_bytes)
    meta = {
        "queries": queries,
        "step_s": step_s,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "rows": frame.height,
    }
    store.put(manifest_key, sealer.manifest(KIND, meta))
    if not read_snapshot(store, provider, object_id).equals(frame):
        raise IntegrityError(f"{store.url(data_key)}: read back differs from the samples fetched")
    return SnapshotResult(object_id, frame["labels"].n_unique(), frame.height)
