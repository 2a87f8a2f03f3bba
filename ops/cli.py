"""`aether ops`: the scheduled jobs (backup, restore, retention archiver, rollup refresh); each exits 0 on success, 1 when
verification failed (tampered or inconsistent data), 2 on bad input or configuration, and writes its last-success
metric (ops/storage/metrics.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from ops.storage.errors import IntegrityError, OpsError
from ops.storage.metrics import record_success
from ops.storage.s3 import ObjectStore, object_store
from ops.storage.settings import OpsSettings
from shared.config import ConfigurationError, load_settings
from shared.crypto import KeyProvider, key_provider_from_settings

EXIT_VERIFY_FAILED = 1
EXIT_BAD_INPUT = 2

app = typer.Typer(help="Scheduled operations jobs", no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(stderr=True, soft_wrap=True)  # one line per message, whatever the width (logs, tests)


@app.callback()
def main() -> None:
    """Scheduled operations jobs."""


@contextmanager
def _job() -> Iterator[tuple[OpsSettings, ObjectStore, KeyProvider]]:
    try:
        settings = load_settings(OpsSettings)
        yield settings, object_store(settings), key_provider_from_settings(settings)
    except IntegrityError as exc:
        console.print(f"[red]verification failed:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_VERIFY_FAILED) from None
    except (OpsError, ConfigurationError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


@contextmanager
def _progress(what: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    columns = (TextColumn(what), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(what, total=total)
        yield lambda size: progress.advance(task, size)


@app.command()
def backup(
    backup_id: Annotated[
        str | None, typer.Option("--backup-id", help="Id of this backup (default: UTC time + random); rerun-safe")
    ] = None,
    retention: Annotated[bool, typer.Option("--retention/--no-retention", help="Apply the retention policy")] = True,
) -> None:
    """pg_dump the database, encrypted in chunks, to S3 (multipart) with an authenticated manifest."""
    from ops.backup.backup import run_backup
    from ops.backup.retention import apply_retention

    with _job() as (settings, store, provider):
        with _progress("backup") as advance:
            result = run_backup(
                settings.database_url.get_secret_value(), store, provider,
                chunk_bytes=settings.ops_chunk_bytes, part_bytes=settings.ops_part_bytes,
                backup_id=backup_id, on_bytes=advance,
            )  # fmt: skip
        state = "already complete" if result.skipped else "written"
        console.print(
            f"backup {result.backup_id} {state}: {result.plain_bytes} bytes dumped, {result.sealed_bytes} sealed in "
            f"{result.chunks} chunks, {sum(result.row_counts.values())} rows in {len(result.row_counts)} tables",
            highlight=False,
        )
        if retention:
            kept = apply_retention(store, provider, settings.backup_retention_days)
            console.print(
                f"retention: {len(kept.deleted)} deleted, {len(kept.kept)} kept, last good {kept.last_good},"
                f" {len(kept.aborted_uploads)} unfinished uploads aborted"
            )
        record_success(settings.metrics_dir(), "backup", result.sealed_bytes)


@app.command()
def restore(
    backup_id: Annotated[
        str, typer.Argument(help="The backup to restore, or `latest` (the newest complete and authentic one)")
    ],
    target_url: Annotated[str, typer.Option("--target-url", help="Database URL of the new (or empty) database")],
    public_key: Annotated[
        Path | None,
        typer.Option("--public-key", help="Audit anchor public key PEM (default: as `aether audit verify`)"),
    ] = None,
) -> None:
    """Verify, decrypt and restore a backup into a fresh database; then audit anchors and row counts are checked."""
    from ops.backup.restore import run_restore
    from shared.audit.cli import public_key_path

    with _job() as (settings, store, provider):
        if backup_id == "latest":
            from ops.backup.retention import latest_good

            backup_id = latest_good(store, provider)
            console.print(f"latest complete backup: {backup_id}", highlight=False)
        with _progress("download") as advance:
            result = run_restore(store, provider, backup_id, target_url, public_key_path(public_key), on_bytes=advance)
        console.print(
            f"restored {result.backup_id} into {result.database!r}: {result.rows} rows in {result.tables} tables match"
            f" the manifest; {result.chains} audit chains intact, {result.anchored_chains} checked against"
            f" {result.anchors} signed anchors",
            highlight=False,
        )
        record_success(settings.metrics_dir(), "restore", result.rows)


@app.command("backup-retention")
def backup_retention() -> None:
    """Apply the backup retention policy alone (AETHER_BACKUP_RETENTION_DAYS)."""
    from ops.backup.retention import apply_retention

    with _job() as (settings, store, provider):
        result = apply_retention(store, provider, settings.backup_retention_days, now=datetime.now(UTC))
        console.print(f"{len(result.deleted)} deleted, {len(result.kept)} kept, last good {result.last_good}")


@app.command()
def archive(
    table: Annotated[
        list[str] | None, typer.Option("--table", help="Time series to archive (repeatable; default: market data)")
    ] = None,
    older_than_days: Annotated[
        int | None, typer.Option("--older-than-days", min=1, help="Override AETHER_ARCHIVE_AFTER_DAYS")
    ] = None,
) -> None:
    """Move whole UTC days older than the policy to encrypted Parquet in S3; rows are deleted only once verified there."""
    from ops.archive.archiver import archive_table
    from ops.archive.tables import DEFAULT_TABLES, time_series

    with _job() as (settings, store, provider):
        days = older_than_days or settings.archive_after_days
        cutoff = datetime.now(UTC) - timedelta(days=days)
        total_rows = total_bytes = 0
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed} days"))
        with Progress(*columns, console=console, transient=True) as progress:
            for series in [time_series(name) for name in table or DEFAULT_TABLES]:
                task = progress.add_task(series.table, total=None)
                for result in archive_table(
                    settings.database_url.get_secret_value(), store, provider, series, cutoff,
                    chunk_bytes=settings.ops_chunk_bytes, part_bytes=settings.ops_part_bytes,
                    log=lambda line: progress.console.print(line, highlight=False),
                ):  # fmt: skip
                    total_rows += result.archived_rows + result.resumed_rows
                    total_bytes += result.sealed_bytes
                    progress.advance(task)
        console.print(f"archived {total_rows} rows older than {cutoff:%Y-%m-%d} ({total_bytes} bytes sealed)")
        record_success(settings.metrics_dir(), "archive", total_bytes)


def _utc(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise OpsError(f"{option} {text!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command("prometheus-snapshot")
def prometheus_snapshot(
    start: Annotated[str, typer.Option("--from", help="Window start, ISO 8601 (UTC unless stated)")],
    end: Annotated[str, typer.Option("--to", help="Window end, ISO 8601 (UTC unless stated)")],
) -> None:
    """Archive AETHER_PROMETHEUS_SERIES over a window at AETHER_PROMETHEUS_STEP_S through Prometheus's HTTP API."""
    from ops.archive.prometheus import snapshot

    with _job() as (settings, store, provider):
        if not settings.prometheus_url:
            raise OpsError("AETHER_PROMETHEUS_URL: required by prometheus-snapshot")
        result = snapshot(
            store, provider, settings.prometheus_url, settings.prometheus_series,
            _utc(start, "--from"), _utc(end, "--to"), settings.prometheus_step_s,
            chunk_bytes=settings.ops_chunk_bytes, part_bytes=settings.ops_part_bytes,
        )  # fmt: skip
        state = "already archived" if result.skipped else "archived"
        console.print(f"{result.object_id} {state}: {result.series} series, {result.samples} samples")
        record_success(settings.metrics_dir(), "prometheus_snapshot", result.samples)


if __name__ == "__main__":
    app()


@app.command("refresh-aggregates")
def refresh_aggregates() -> None:
    """Refresh the daily rollups (continuous aggregates or materialized views) that have new rows."""
    from ops.aggregates import refresh_aggregates as refresh

    try:
        settings = load_settings(OpsSettings)
    except ConfigurationError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    results = refresh(settings.database_url.get_secret_value())
    for result in results:
        state = "refreshed" if result.refreshed else "up to date"
        since = "" if result.window_start is None else f" from {result.window_start.isoformat()}"
        console.print(f"{result.view} ({result.mode.value}): {state}{since}, {result.rows} rows", highlight=False)
    record_success(settings.metrics_dir(), "refresh_aggregates", sum(result.rows for result in results))
