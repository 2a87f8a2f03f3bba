"""`aether ops`: the scheduled jobs (backup, restore, retention archiver); each exits 0 on success, 1 when
verification failed (tampered or inconsistent data), 2 on bad input or configuration, and writes its last-success
metric (ops/storage/metrics.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
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
console = Console(stderr=True)


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
            console.print(f"retention: {len(kept.deleted)} deleted, {len(kept.kept)} kept, last good {kept.last_good}")
        record_success(settings.metrics_dir(), "backup", result.sealed_bytes)


@app.command()
def restore(
    backup_id: Annotated[str, typer.Argument(help="The backup to restore (see the bucket's backups/ prefix)")],
    target_url: Annotated[str, typer.Option("--target-url", help="Database URL of the new (or empty) database")],
    public_key: Annotated[
        Path | None,
        typer.Option("--public-key", help="Audit anchor public key PEM (default: as `aether audit verify`)"),
    ] = None,
) -> None:
    """Verify, decrypt and restore a backup into a fresh database; then audit anchors and row counts are checked."""
    from ops.backup.restore import run_restore
    from shared.audit.cli import _public_key_path

    with _job() as (settings, store, provider):
        with _progress("download") as advance:
            result = run_restore(store, provider, backup_id, target_url, _public_key_path(public_key), on_bytes=advance)
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
