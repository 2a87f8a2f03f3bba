"""`aether ops restore`: download, verify every chunk and the manifest, then pg_restore into a fresh database, verify
the audit chains against their signed anchors and compare row counts with the manifest.

Nothing touches the target before the whole backup verified: the sealed object is downloaded to a temporary file
(ciphertext only), checked end to end, and only then decrypted a second time straight into pg_restore's stdin
(the plaintext dump never lands on disk).
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from psycopg import sql
from sqlalchemy.engine import make_url

from ops.backup.backup import data_key, load_manifest
from ops.backup.pg import connect, database_name, pg_tool, row_counts, tool_invocation, user_tables
from ops.storage.errors import IntegrityError, OpsError
from ops.storage.s3 import ObjectStore
from ops.storage.sealed import Manifest, open_chunks, verify_chunks
from shared.audit.anchor_verify import AnchoredReport, verify_all_with_anchors
from shared.audit.anchors import load_anchor_public_key, load_anchors_from_table
from shared.config import AetherSettings, Environment
from shared.crypto import KeyProvider
from shared.db import create_engine


@dataclass(frozen=True, slots=True)
class RestoreResult:
    backup_id: str
    database: str
    tables: int
    rows: int
    chains: int
    anchored_chains: int
    anchors: int
    mismatched: dict[str, tuple[int, int]] = field(default_factory=dict)


def _exists(maintenance_url: str, name: str) -> bool:
    with connect(maintenance_url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def _maintenance_url(target_url: str) -> str:
    return make_url(target_url).set(database="postgres").render_as_string(hide_password=False)


def check_target(target_url: str) -> bool:
    """Refuse a target database holding any table (naming it); True when it must be created."""
    name = database_name(target_url)
    if not _exists(_maintenance_url(target_url), name):
        return True
    with connect(target_url) as conn:
        tables = user_tables(conn)
    if tables:
        first = ".".join(tables[0])
        raise OpsError(
            f"restore target database {name!r} is not empty ({len(tables)} tables, e.g. {first}): nothing restored"
        )
    return False


def _create(target_url: str) -> None:
    with connect(_maintenance_url(target_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database_name(target_url))))


def _drop(target_url: str) -> None:
    with connect(_maintenance_url(target_url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database_name(target_url)))
        )


def _pg_restore(manifest: Manifest, sealed_file: Path, target_url: str, where: str) -> None:
    args, env = tool_invocation(target_url)
    command = [str(pg_tool("pg_restore")), "--no-owner", "--no-acl", "--exit-on-error", "--no-password", *args]
    process = subprocess.Popen(  # noqa: S603 - fixed argument list, the password only in PGPASSWORD
        command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    if process.stdin is None or process.stderr is None:
        raise OpsError("pg_restore started without its pipes")
    try:
        with sealed_file.open("rb") as source:
            for plain in open_chunks(manifest, source, where):
                process.stdin.write(plain)
        process.stdin.close()
    except BrokenPipeError:
        pass
    error = process.stderr.read().decode(errors="replace").strip()
    if process.wait() != 0:
        raise OpsError(f"pg_restore into {database_name(target_url)!r} failed: {(error.splitlines() or ['?'])[-1]}")


async def _audit(target_url: str, public_key: Path) -> tuple[list[AnchoredReport], int]:
    key = load_anchor_public_key(public_key)
    engine = create_engine(
        AetherSettings(env=Environment.TEST, database_url=target_url), application_name="aether-ops-restore"
    )
    try:
        async with engine.connect() as connection:
            anchors = await load_anchors_from_table(connection)
            return await verify_all_with_anchors(connection, anchors, key), len(anchors)
    finally:
        await engine.dispose()


def run_restore(
    store: ObjectStore,
    provider: KeyProvider,
    backup_id: str,
    target_url: str,
    public_key: Path,
    *,
    on_bytes: Callable[[int], None] | None = None,
) -> RestoreResult:
    """Verify the whole backup, restore it into a new (or empty) database, then check audit anchors and row counts."""
    create = check_target(target_url)
    manifest = load_manifest(store, provider, backup_id)
    key = data_key(store, backup_id)
    where = store.url(key)
    with tempfile.TemporaryDirectory(prefix="aether-restore-") as folder:
        sealed_file = Path(folder) / "dump.sealed"
        with sealed_file.open("wb") as target:
            store.download(key, target, on_bytes)
        with sealed_file.open("rb") as source:
            verify_chunks(manifest, source, where)
        if create:
            _create(target_url)
        try:
            _pg_restore(manifest, sealed_file, target_url, where)
        except BaseException:
            if create:  # a half-restored database we made must not pass for a restore
                _drop(target_url)
            raise
    with connect(target_url) as conn:
        counts = row_counts(conn)
    expected: dict[str, int] = {str(k): int(v) for k, v in manifest.meta["row_counts"].items()}
    mismatched = {
        table: (expected.get(table, -1), counts.get(table, -1))
        for table in sorted(set(expected) | set(counts))
        if expected.get(table, -1) != counts.get(table, -1)
    }
    if mismatched:
        table, (want, got) = next(iter(mismatched.items()))
        raise IntegrityError(
            f"restored {database_name(target_url)!r} differs from the manifest in {len(mismatched)} table(s), e.g. {table}: {want} rows expected, {got} restored"
        )
    reports, anchors = asyncio.run(_audit(target_url, public_key))
    broken = [report for report in reports if not report.ok]
    if broken:
        first = broken[0].first_break
        detail = "" if first is None else f": {first.kind} at position {first.position}"
        raise IntegrityError(f"audit chain {broken[0].chain!r} of the restored database is broken{detail}")
    return RestoreResult(
        backup_id=backup_id,
        database=database_name(target_url),
        tables=len(counts),
        rows=sum(counts.values()),
        chains=len(reports),
        anchored_chains=sum(1 for report in reports if report.anchored_length),
        anchors=anchors,
    )
