"""Backup retention: delete backups older than the policy, never the newest good one (an authentic manifest whose
data object is present), and incomplete backups (no manifest) once they are older than the policy too; abort
multipart uploads a killed backup left unfinished once they are a day old."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ops.backup.backup import data_key, load_manifest, manifest_key
from ops.storage.errors import OpsError
from ops.storage.s3 import ObjectStore, StoredObject
from shared.crypto import KeyProvider


@dataclass(frozen=True, slots=True)
class RetentionResult:
    kept: list[str]
    deleted: list[str]
    last_good: str | None
    aborted_uploads: list[str]


def _backup_objects(store: ObjectStore) -> dict[str, list[StoredObject]]:
    root = store.key("backups") + "/"
    grouped: dict[str, list[StoredObject]] = defaultdict(list)
    for item in store.listing(root):
        backup_id = item.key[len(root) :].split("/", 1)[0]
        grouped[backup_id].append(item)
    return grouped


def _survey(
    store: ObjectStore, provider: KeyProvider
) -> tuple[dict[str, list[StoredObject]], dict[str, datetime], list[str]]:
    """Every backup's objects, its creation time (the manifest's, else its oldest object's) and the good ones."""
    grouped = _backup_objects(store)
    created: dict[str, datetime] = {}
    good: list[str] = []
    for backup_id, objects in grouped.items():
        keys = {item.key for item in objects}
        created[backup_id] = min(item.modified for item in objects)
        if manifest_key(store, backup_id) in keys and data_key(store, backup_id) in keys:
            try:
                created[backup_id] = load_manifest(store, provider, backup_id).created_at
            except OpsError:
                continue
            good.append(backup_id)
    return grouped, created, good


def latest_good(store: ObjectStore, provider: KeyProvider) -> str:
    """The id of the newest backup whose manifest is authentic and whose data is present."""
    _, created, good = _survey(store, provider)
    if not good:
        raise OpsError(f"no complete backup under {store.url(store.key('backups'))}/")
    return max(good, key=lambda backup_id: created[backup_id])


def apply_retention(
    store: ObjectStore, provider: KeyProvider, retention_days: int, now: datetime | None = None
) -> RetentionResult:
    """Delete what the policy expires; the newest good backup survives whatever its age."""
    moment = now or datetime.now(UTC)
    cutoff = moment - timedelta(days=retention_days)
    # A backup killed mid-upload leaves an unfinished multipart upload (billed storage): gone after a day.
    aborted = store.abort_stale_uploads(store.key("backups") + "/", moment - timedelta(days=1))
    grouped, created, good = _survey(store, provider)
    last_good = max(good, key=lambda backup_id: created[backup_id]) if good else None
    expired = sorted(b for b in grouped if created[b] < cutoff and b != last_good)
    store.delete(item.key for backup_id in expired for item in grouped[backup_id])
    return RetentionResult(sorted(set(grouped) - set(expired)), expired, last_good, aborted)
