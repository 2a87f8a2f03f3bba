"""The restore drill (issue 17): a database with orders, fills and audit entries made by the real OMS on the paper
venue, anchored with a signed key, is backed up to S3 (moto on loopback, real boto3) and restored into a new
database: row counts equal, every audit chain verified against its anchors. A backup with one flipped byte in
any chunk or in its manifest, a truncated or reordered one, a non-empty target, a missing bucket or backup each
fail with an error naming it, and nothing is restored."""

from __future__ import annotations

import asyncio
import io
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from aether.cli import app as aether_app
from ops.backup.backup import KIND, data_key, load_manifest, manifest_key, run_backup
from ops.backup.restore import run_restore
from ops.backup.retention import apply_retention, latest_good
from ops.storage.errors import IntegrityError, OpsError
from ops.storage.metrics import LAST_SUCCESS, metric_file
from ops.storage.s3 import ObjectStore
from ops.storage.sealed import Sealer, open_manifest, verify_chunks
from shared.audit import append
from shared.audit.anchors import AnchorPolicy, AnchorSigner, anchor_due_chains, ensure_anchor_key_pair
from shared.auth.keys import load_private_key_file
from shared.crypto import LocalFileKeyProvider
from shared.db import UnitOfWork, create_engine, sessionmaker_for
from shared.events.tables import event_tables
from tests.conftest import libpq_url
from tests.fakes.s3 import LocalS3
from tests.helpers import _drop_database, own_database
from tests.reliability.oms_harness import book_levels, oms_settings, paper_stack, unique_symbol

CHUNK = 16 * 1024  # small chunks: the drill's dump spans many of them
PART = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def source_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "backup_src") as url:
        yield url


@pytest.fixture(scope="module")
def anchor_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return ensure_anchor_key_pair(tmp_path_factory.mktemp("anchor"))


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> LocalFileKeyProvider:
    return LocalFileKeyProvider(tmp_path_factory.mktemp("kek") / "kek.json")


async def _trade_and_anchor(url: str, redis_url: str, kafka_bootstrap: str, private_key: Path) -> None:
    symbol = unique_symbol("BK")
    settings = oms_settings(url, redis_url, kafka_bootstrap, [symbol])
    async with paper_stack(settings) as stack:
        await stack.set_book(symbol, *book_levels())
        accounts = [f"backup-drill-{index}" for index in range(3)]
        for account in accounts:
            await stack.fund(account, {"USD": Decimal(100_000)})
        await stack.buy_positions(stack.service(), accounts, symbol, Decimal("0.5"))
        await stack.close([symbol])
    engine = create_engine(settings, application_name="backup-drill")
    try:
        async with UnitOfWork(sessionmaker_for(engine)) as uow:
            for index in range(5):
                await append(uow.session, actor="drill", action="ops.drill", target=f"t:{index}", details={"i": index})
        async with UnitOfWork(sessionmaker_for(engine)) as uow:
            signer = AnchorSigner(load_private_key_file(private_key))
            anchors = await anchor_due_chains(uow.session, signer, event_tables("reports"), AnchorPolicy(1, 1.0))
            assert anchors
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def populated(source_url: str, redis_url: str, kafka_bootstrap: str, anchor_keys: tuple[Path, Path]) -> dict[str, int]:
    asyncio.run(_trade_and_anchor(source_url, redis_url, kafka_bootstrap, anchor_keys[0]))
    with psycopg.connect(libpq_url(source_url)) as conn:
        counts = {
            table: int(conn.execute(_count(table)).fetchone()[0])  # type: ignore[index]
            for table in ("oms.orders", "oms.fills", "audit.audit_log", "anchors.audit_anchors")
        }
    assert all(counts.values()), counts
    return counts


@pytest.fixture(scope="module")
def store(s3_server: LocalS3) -> ObjectStore:
    return s3_server.store(s3_server.new_bucket())


@pytest.fixture(scope="module")
def backup_id(source_url: str, populated: dict[str, int], store: ObjectStore, provider: LocalFileKeyProvider) -> str:
    result = run_backup(source_url, store, provider, chunk_bytes=CHUNK, part_bytes=PART)
    assert result.chunks > 3
    assert not result.skipped
    for table, rows in populated.items():
        assert result.row_counts[table] == rows
    return result.backup_id


def _target(source_url: str) -> Iterator[str]:
    url = make_url(source_url)
    name = f"{url.database}_r{uuid.uuid4().hex[:6]}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        _drop_database(admin, name)


@pytest.fixture
def target_url(source_url: str) -> Iterator[str]:
    yield from _target(source_url)


def _count(table: str) -> sql.Composed:
    schema, name = table.split(".")
    return sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def _database_exists(url: str) -> bool:
    name = make_url(url).database
    admin = make_url(url).set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def test_restore_drill_counts_equal_and_audit_verified_with_anchors(
    backup_id: str,
    store: ObjectStore,
    provider: LocalFileKeyProvider,
    target_url: str,
    anchor_keys: tuple[Path, Path],
    populated: dict[str, int],
) -> None:
    result = run_restore(store, provider, backup_id, target_url, anchor_keys[1])

    manifest = load_manifest(store, provider, backup_id)
    assert result.rows == sum(manifest.meta["row_counts"].values())
    assert result.chains >= 1
    assert result.anchored_chains >= 1
    assert result.anchors >= 1
    with psycopg.connect(libpq_url(target_url)) as conn:
        for table, rows in populated.items():
            assert conn.execute(_count(table)).fetchone() == (rows,)
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (manifest.meta["schema_version"],)


def test_the_same_backup_id_again_is_a_no_op(
    backup_id: str, source_url: str, store: ObjectStore, provider: LocalFileKeyProvider
) -> None:
    before = store.get(manifest_key(store, backup_id))
    again = run_backup(source_url, store, provider, chunk_bytes=CHUNK, part_bytes=PART, backup_id=backup_id)
    assert again.skipped
    assert store.get(manifest_key(store, backup_id)) == before


def _copy_backup(store: ObjectStore, backup_id: str) -> str:
    """The backup's objects under a new id cannot be used: the id is bound into every chunk and the manifest."""
    copy = f"{backup_id}-copy{uuid.uuid4().hex[:4]}"
    store.put(data_key(store, copy), store.get(data_key(store, backup_id)))
    store.put(manifest_key(store, copy), store.get(manifest_key(store, backup_id)))
    return copy


def _flip(blob: bytes, position: int) -> bytes:
    return blob[:position] + bytes([blob[position] ^ 0x01]) + blob[position + 1 :]


def test_one_flipped_byte_in_any_chunk_fails_before_anything_is_restored(
    backup_id: str, store: ObjectStore, provider: LocalFileKeyProvider, target_url: str, anchor_keys: tuple[Path, Path]
) -> None:
    manifest = load_manifest(store, provider, backup_id)
    sealed = store.get(data_key(store, backup_id))
    starts = [0]
    for chunk in manifest.chunks:
        starts.append(starts[-1] + chunk.sealed_bytes)
    last = len(manifest.chunks) - 1
    # The first byte (a nonce), the middle of a middle chunk (ciphertext), the last byte (the final tag).
    middle = last // 2
    # The first byte (a nonce), the middle of a middle chunk (ciphertext), the last byte (the final tag).
    for chunk_index, position in (
        (0, 0),
        (middle, (starts[middle] + starts[middle + 1]) // 2),
        (last, len(sealed) - 1),
    ):
        with pytest.raises(IntegrityError, match=f"chunk {chunk_index} "):
            _restore_tampered(store, provider, backup_id, _flip(sealed, position), target_url, anchor_keys[1])
        assert not _database_exists(target_url)


def _restore_tampered(
    store: ObjectStore, provider: LocalFileKeyProvider, backup_id: str, sealed: bytes, target_url: str, key: Path
) -> None:
    original = store.get(data_key(store, backup_id))
    store.put(data_key(store, backup_id), sealed)
    try:
        run_restore(store, provider, backup_id, target_url, key)
    finally:
        store.put(data_key(store, backup_id), original)


def test_a_truncated_or_reordered_backup_fails(
    backup_id: str, store: ObjectStore, provider: LocalFileKeyProvider, target_url: str, anchor_keys: tuple[Path, Path]
) -> None:
    manifest = load_manifest(store, provider, backup_id)
    sealed = store.get(data_key(store, backup_id))
    first, second = manifest.chunks[0].sealed_bytes, manifest.chunks[1].sealed_bytes
    swapped = sealed[first : first + second] + sealed[:first] + sealed[first + second :]
    with pytest.raises(IntegrityError, match="chunk 0 "):
        _restore_tampered(store, provider, backup_id, swapped, target_url, anchor_keys[1])
    with pytest.raises(IntegrityError, match="truncated"):
        _restore_tampered(
            store, provider, backup_id, sealed[: -manifest.chunks[-1].sealed_bytes], target_url, anchor_keys[1]
        )
    assert not _database_exists(target_url)


@pytest.mark.parametrize("where", ["start", "wrapped key", "row counts", "a chunk hash", "mac", "end"])
def test_one_flipped_byte_in_the_manifest_fails(
    where: str,
    backup_id: str,
    store: ObjectStore,
    provider: LocalFileKeyProvider,
    target_url: str,
    anchor_keys: tuple[Path, Path],
) -> None:
    raw = store.get(manifest_key(store, backup_id))
    text = raw.decode()
    anchors = {
        "start": 0,
        "wrapped key": text.index('"wrapped_key": "') + 20,
        "row counts": text.index('"oms.orders": ') + 14,
        "a chunk hash": text.index('"chunks"') + 40,
        "mac": text.index('"mac": "') + 10,
        "end": len(raw) - 2,
    }
    tampered = _flip(raw, anchors[where])
    assert tampered != raw
    store.put(manifest_key(store, backup_id), tampered)
    try:
        with pytest.raises(IntegrityError, match="manifest"):
            run_restore(store, provider, backup_id, target_url, anchor_keys[1])
    finally:
        store.put(manifest_key(store, backup_id), raw)
    assert not _database_exists(target_url)


def test_a_copied_backup_under_another_id_is_refused(
    backup_id: str, store: ObjectStore, provider: LocalFileKeyProvider, target_url: str, anchor_keys: tuple[Path, Path]
) -> None:
    copy = _copy_backup(store, backup_id)
    with pytest.raises(IntegrityError, match=f"names object '{backup_id}'"):
        run_restore(store, provider, copy, target_url, anchor_keys[1])


def test_a_non_empty_target_is_refused_by_name_and_left_alone(
    backup_id: str, source_url: str, store: ObjectStore, provider: LocalFileKeyProvider, anchor_keys: tuple[Path, Path]
) -> None:
    with psycopg.connect(libpq_url(source_url)) as conn:
        before = conn.execute("SELECT count(*) FROM oms.orders").fetchone()
    name = make_url(source_url).database
    with pytest.raises(OpsError, match=f"restore target database '{name}' is not empty"):
        run_restore(store, provider, backup_id, source_url, anchor_keys[1])
    with psycopg.connect(libpq_url(source_url)) as conn:
        assert conn.execute("SELECT count(*) FROM oms.orders").fetchone() == before


def test_a_missing_backup_or_bucket_is_named(
    s3_server: LocalS3,
    store: ObjectStore,
    provider: LocalFileKeyProvider,
    target_url: str,
    anchor_keys: tuple[Path, Path],
) -> None:
    with pytest.raises(OpsError, match="backup 'no-such-backup' not found"):
        run_restore(store, provider, "no-such-backup", target_url, anchor_keys[1])
    with pytest.raises(OpsError, match="S3 bucket 'aether-missing-bucket' does not exist"):
        s3_server.store("aether-missing-bucket").check_bucket()
    assert not _database_exists(target_url)


def test_multipart_upload_of_several_parts_reads_back(store: ObjectStore, provider: LocalFileKeyProvider) -> None:
    payload = os.urandom(11 * 1024 * 1024 + 7)
    sealer = Sealer(provider, "multipart-probe", 1024 * 1024)
    key = store.key("probe", "multipart-probe")
    blocks = (payload[i : i + 300_000] for i in range(0, len(payload), 300_000))
    sealed_size = store.upload_stream(key, sealer.seal(blocks), PART)
    assert len(sealer.chunks) == 12
    manifest = open_manifest(provider, sealer.manifest("probe", {}), "multipart-probe", "probe")
    assert sealed_size == manifest.sealed_bytes
    answer = store.client.head_object(Bucket=store.bucket, Key=key)
    assert answer["ETag"].strip('"').endswith("-3")  # three parts: 5 MiB, 5 MiB, the rest
    assert verify_chunks(manifest, io.BytesIO(store.get(key)), key) == len(payload)


def test_retention_deletes_old_backups_but_never_the_last_good_one(
    s3_server: LocalS3, source_url: str, populated: dict[str, int], provider: LocalFileKeyProvider
) -> None:
    store = s3_server.store(s3_server.new_bucket())
    older = run_backup(source_url, store, provider, chunk_bytes=CHUNK, part_bytes=PART, backup_id="a-older").backup_id
    newer = run_backup(source_url, store, provider, chunk_bytes=CHUNK, part_bytes=PART, backup_id="b-newer").backup_id
    store.put(store.key("backups", "c-incomplete", "dump.sealed"), b"never finished")
    killed = store.key("backups", "d-killed", "dump.sealed")
    store.client.create_multipart_upload(Bucket=store.bucket, Key=killed)  # a backup killed mid-upload
    now = datetime.now(UTC)

    fresh = apply_retention(store, provider, retention_days=30, now=now)
    assert fresh.deleted == []
    # moto reports every upload as initiated in 2010, so the unfinished one is already a day old here.
    assert fresh.aborted_uploads == [killed]
    assert "Uploads" not in store.client.list_multipart_uploads(Bucket=store.bucket)
    # The newest backup's manifest is broken: the older one becomes the last good one and survives expiry.
    good = store.get(manifest_key(store, newer))
    store.put(manifest_key(store, newer), _flip(good, 40))
    result = apply_retention(store, provider, retention_days=30, now=now + timedelta(days=31))
    assert (result.last_good, result.deleted) == (older, ["b-newer", "c-incomplete"])
    assert latest_good(store, provider) == older
    assert store.exists(manifest_key(store, older))
    assert store.exists(data_key(store, older))
    assert not store.listing(store.key("backups", newer))


def test_cli_backup_writes_the_last_success_metric_and_names_a_missing_bucket(
    s3_server: LocalS3,
    source_url: str,
    populated: dict[str, int],
    tmp_path: Path,
    provider: LocalFileKeyProvider,
    target_url: str,
    anchor_keys: tuple[Path, Path],
) -> None:
    bucket = s3_server.new_bucket()
    env = {
        **s3_server.env(bucket),
        "AETHER_DATABASE_URL": source_url,
        "AETHER_LOCAL_KEK_FILE": str(provider.path),
        "AETHER_OPS_METRICS_DIR": str(tmp_path),
        "AETHER_OPS_CHUNK_BYTES": str(CHUNK),
    }
    runner = CliRunner()
    done = runner.invoke(aether_app, ["ops", "backup", "--backup-id", "cli-1"], env=env)
    assert done.exit_code == 0, done.output
    assert "backup cli-1 written" in done.output
    assert f'{LAST_SUCCESS}{{job="backup"}}' in metric_file(tmp_path, "backup").read_text()
    restored = runner.invoke(
        aether_app,
        ["ops", "restore", "latest", "--target-url", target_url, "--public-key", str(anchor_keys[1])],
        env=env,
    )
    assert restored.exit_code == 0, restored.output
    assert "latest complete backup: cli-1" in restored.output
    assert "match the manifest" in restored.output
    assert "audit chains intact" in restored.output

    missing = runner.invoke(aether_app, ["ops", "backup"], env={**env, "AETHER_S3_BUCKET": "aether-no-such-bucket"})
    assert missing.exit_code == 2
    assert "S3 bucket 'aether-no-such-bucket' does not exist" in missing.output
    unset = runner.invoke(aether_app, ["ops", "backup"], env={**env, "AETHER_S3_BUCKET": ""})
    assert unset.exit_code == 2
    assert "AETHER_S3_BUCKET" in unset.output


def test_cli_restore_into_a_non_empty_target_and_an_unknown_table_exit_2_naming_them(
    s3_server: LocalS3, backup_id: str, store: ObjectStore, source_url: str, provider: LocalFileKeyProvider
) -> None:
    env = {
        **s3_server.env(store.bucket),
        "AETHER_DATABASE_URL": source_url,
        "AETHER_LOCAL_KEK_FILE": str(provider.path),
    }
    runner = CliRunner()
    refused = runner.invoke(aether_app, ["ops", "restore", backup_id, "--target-url", source_url], env=env)
    assert refused.exit_code == 2
    assert f"restore target database '{make_url(source_url).database}' is not empty" in refused.output
    unknown = runner.invoke(aether_app, ["ops", "archive", "--table", "oms.orders"], env=env)
    assert unknown.exit_code == 2
    assert "--table 'oms.orders' is not an archivable time series" in unknown.output


def test_a_failing_pg_restore_leaves_no_half_restored_database(
    store: ObjectStore, provider: LocalFileKeyProvider, target_url: str, anchor_keys: tuple[Path, Path]
) -> None:
    """An authentic backup whose dump pg_restore cannot read: the database the restore created is dropped again."""
    backup = f"not-a-dump-{uuid.uuid4().hex[:6]}"
    sealer = Sealer(provider, backup, CHUNK)
    store.upload_stream(data_key(store, backup), sealer.seal([b"PGDMP but not really" * 100]), PART)
    store.put(manifest_key(store, backup), sealer.manifest(KIND, {"row_counts": {}, "schema_version": None}))
    with pytest.raises(OpsError, match=f"pg_restore into '{make_url(target_url).database}' failed"):
        run_restore(store, provider, backup, target_url, anchor_keys[1])
    assert not _database_exists(target_url)
