"""S3 through boto3: a bucket and key prefix, multipart upload of a byte stream, and errors that name the object."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ops.storage.errors import OpsError
from ops.storage.settings import OpsSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_MISSING_KEY = {"NoSuchKey", "404", "NotFound"}
_MISSING_BUCKET = {"NoSuchBucket"}


def s3_client(settings: OpsSettings) -> S3Client:
    """A boto3 S3 client for the configured endpoint (AWS when none); credentials from the default chain."""
    config = Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region, config=config)


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    modified: datetime


class ObjectStore:
    """One bucket, keys under one prefix; every failure becomes an OpsError naming the bucket or key."""

    def __init__(self, client: S3Client, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def key(self, *parts: str) -> str:
        """The full key of `parts` under the prefix."""
        return "/".join([self.prefix, *parts])

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    @contextlib.contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING_BUCKET:
                raise OpsError(f"S3 bucket {self.bucket!r} does not exist (AETHER_S3_BUCKET)") from None
            if code in _MISSING_KEY and key is not None:
                raise OpsError(f"{self.url(key)} does not exist") from None
            where = self.url(key) if key else f"s3://{self.bucket}"
            raise OpsError(f"S3 refused the request on {where}: {code or type(exc).__name__}") from None
        except BotoCoreError as exc:
            raise OpsError(f"S3 unreachable for s3://{self.bucket}: {type(exc).__name__}") from None

    def check_bucket(self) -> None:
        """Fail with a clear error when the bucket is missing or unreachable."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING_BUCKET | {"404", "NotFound"}:
                raise OpsError(f"S3 bucket {self.bucket!r} does not exist (AETHER_S3_BUCKET)") from None
            raise OpsError(f"S3 bucket {self.bucket!r} is not usable: {code}") from None
        except BotoCoreError as exc:
            raise OpsError(f"S3 unreachable for s3://{self.bucket}: {type(exc).__name__}") from None

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in _MISSING_KEY:
                return False
            with self._errors(key):
                raise
        return True

    def put(self, key: str, body: bytes) -> None:
        with self._errors(key):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

    def get(self, key: str) -> bytes:
        with self._errors(key):
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def download(self, key: str, target: IO[bytes], on_bytes: Callable[[int], None] | None = None) -> None:
        """Stream the object into `target`."""
        with self._errors(key):
            self.client.download_fileobj(self.bucket, key, target, Callback=on_bytes)

    def upload_stream(
        self, key: str, chunks: Iterable[bytes], part_bytes: int, on_bytes: Callable[[int], None] | None = None
    ) -> int:
        """Multipart upload of `chunks` in parts of at least `part_bytes`; aborted (nothing left) on any failure."""
        with self._errors(key):
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        parts: list[dict[str, object]] = []
        total = 0
        try:
            buffer = bytearray()
            for chunk in chunks:
                buffer += chunk
                if len(buffer) >= part_bytes:
                    parts.append(self._part(key, upload_id, len(parts) + 1, bytes(buffer)))
                    total += len(buffer)
                    if on_bytes is not None:
                        on_bytes(len(buffer))
                    buffer.clear()
            if buffer or not parts:
                parts.append(self._part(key, upload_id, len(parts) + 1, bytes(buffer)))
                total += len(buffer)
                if on_bytes is not None:
                    on_bytes(len(buffer))
            with self._errors(key):
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                )
        except BaseException:
            with contextlib.suppress(ClientError, BotoCoreError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        return total

    def _part(self, key: str, upload_id: str, number: int, body: bytes) -> dict[str, object]:
        with self._errors(key):
            answer = self.client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
        return {"ETag": answer["ETag"], "PartNumber": number}

    def listing(self, prefix: str) -> list[StoredObject]:
        """Every object under `prefix` (a full key prefix)."""
        found: list[StoredObject] = []
        with self._errors():
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    found.append(StoredObject(item["Key"], item["Size"], item["LastModified"]))
        return found

    def abort_stale_uploads(self, prefix: str, older_than: datetime) -> list[str]:
        """Abort multipart uploads under `prefix` begun before `older_than` (a killed job's leftovers); their keys."""
        aborted: list[str] = []
        with self._errors():
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < older_than:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        aborted.append(upload["Key"])
        return aborted

    def delete(self, keys: Iterable[str]) -> int:
        """Delete `keys` (batches of 1000); the number asked to delete."""
        batch: list[str] = []
        count = 0
        for key in keys:
            batch.append(key)
            if len(batch) == 1000:
                count += self._delete_batch(batch)
                batch = []
        if batch:
            count += self._delete_batch(batch)
        return count

    def _delete_batch(self, keys: list[str]) -> int:
        with self._errors():
            answer = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True}
            )
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise OpsError(f"S3 refused to delete {self.url(first.get('Key', '?'))}: {first.get('Code')}")
        return len(keys)


def object_store(settings: OpsSettings) -> ObjectStore:
    """The configured store, its bucket checked."""
    store = ObjectStore(s3_client(settings), settings.bucket(), settings.s3_prefix)
    store.check_bucket()
    return store
