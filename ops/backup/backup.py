"""`aether ops backup`: pg_dump (custom format) streamed through the sealed format into an S3 multipart upload.

Layout under the prefix: ``backups/<id>/dump.sealed`` then ``backups/<id>/manifest.json`` (written last: a backup
without a manifest never completed). Row counts and the schema version are read in the very snapshot pg_dump
dumps (`pg_export_snapshot` + `pg_dump --snapshot`), so the restore can compare them exactly.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from ops.backup.pg import connect, database_name, pg_tool, row_counts, schema_version, tool_invocation
from ops.storage.errors import IntegrityError, OpsError
from ops.storage.s3 import ObjectStore
from ops.storage.sealed import Manifest, Sealer, open_manifest
from shared.crypto import KeyProvider

KIND = "postgres-backup"
BACKUP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
READ_BYTES = 1024 * 1024


def new_backup_id(now: datetime | None = None) -> str:
    """`<UTC time>-<random>`: sorts by time, never collides."""
    moment = now or datetime.now(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def check_backup_id(backup_id: str) -> str:
    if not BACKUP_ID.match(backup_id):
        raise OpsError(f"backup id {backup_id!r}: 1-64 of letters, digits, '.', '_', '-'")
    return backup_id


def data_key(store: ObjectStore, backup_id: str) -> str:
    return store.key("backups", backup_id, "dump.sealed")


def manifest_key(store: ObjectStore, backup_id: str) -> str:
    return store.key("backups", backup_id, "manifest.json")


def load_manifest(store: ObjectStore, provider: KeyProvider, backup_id: str) -> Manifest:
    """The authenticated manifest of `backup_id`; OpsError when there is none, IntegrityError when tampered."""
    key = manifest_key(store, check_backup_id(backup_id))
    if not store.exists(key):
        raise OpsError(f"backup {backup_id!r} not found ({store.url(key)} does not exist)")
    manifest = open_manifest(provider, store.get(key), backup_id, store.url(key))
    if manifest.body.get("kind") != KIND:
        raise IntegrityError(f"manifest {store.url(key)} is not a database backup")
    return manifest


@dataclass(frozen=True, slots=True)
class BackupResult:
    backup_id: str
    plain_bytes: int
    sealed_bytes: int
    chunks: int
    row_counts: dict[str, int]
    skipped: bool = False


def _read_all(stream: IO[bytes]) -> Iterator[bytes]:
    while block := stream.read(READ_BYTES):
        yield block


def run_backup(
    database_url: str,
    store: ObjectStore,
    provider: KeyProvider,
    *,
    chunk_bytes: int,
    part_bytes: int,
    backup_id: str | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> BackupResult:
    """Dump, seal and upload the database; a backup id that already completed is left as it is (idempotent)."""
    backup_id = check_backup_id(backup_id) if backup_id else new_backup_id()
    if store.exists(manifest_key(store, backup_id)):
        done = load_manifest(store, provider, backup_id)
        return BackupResult(
            backup_id, int(done.body["plain_bytes"]), done.sealed_bytes, len(done.chunks),
            dict(done.meta["row_counts"]), skipped=True,
        )  # fmt: skip
    args, env = tool_invocation(database_url)
    with connect(database_url) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute("SELECT pg_export_snapshot(), current_setting('server_version')").fetchone()
        if row is None:
            raise OpsError("pg_export_snapshot() answered nothing")
        snapshot, server_version = str(row[0]), str(row[1])
        counts = row_counts(conn)
        version = schema_version(conn)
        command = [str(pg_tool("pg_dump")), "--format=custom", "--no-password", f"--snapshot={snapshot}", *args]
        sealer = Sealer(provider, backup_id, chunk_bytes)
        process = subprocess.Popen(  # noqa: S603 - fixed argument list, the password only in PGPASSWORD
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        if process.stdout is None or process.stderr is None:
            raise OpsError("pg_dump started without its pipes")
        try:
            sealed = store.upload_stream(
                data_key(store, backup_id), sealer.seal(_read_all(process.stdout)), part_bytes, on_bytes
            )
        finally:
            process.stdout.close()
            error = process.stderr.read().decode(errors="replace").strip()
            code = process.wait()
        if code != 0:
            store.delete([data_key(store, backup_id)])
            raise OpsError(f"pg_dump of {database_name(database_url)!r} failed: {(error.splitlines() or ['?'])[-1]}")
        conn.rollback()
    meta = {
        "database": database_name(database_url),
        "server_version": server_version,
        "schema_version": version,
        "row_counts": counts,
        "dump_format": "custom",
    }
    store.put(manifest_key(store, backup_id), sealer.manifest(KIND, meta))
    plain = sum(chunk.plain_bytes for chunk in sealer.chunks)
    return BackupResult(backup_id, plain, sealed, len(sealer.chunks), counts)
