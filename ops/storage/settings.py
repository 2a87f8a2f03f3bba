"""Object-store and job settings (`AETHER_S3_*`, `AETHER_OPS_*`), read by every `aether ops` job."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from shared.config import AetherSettings, ConfigurationError, env_name

MIB = 1024 * 1024
# S3 refuses multipart parts under 5 MiB (all but the last).
S3_MIN_PART_BYTES = 5 * MIB


class OpsSettings(AetherSettings):
    """Where backups and archives go and how they are cut; the bucket has no default: production points at S3."""

    s3_bucket: str | None = Field(default=None, min_length=3, max_length=63)
    s3_prefix: str = Field(default="aether", pattern=r"^[A-Za-z0-9._/-]{1,200}$")
    # None: AWS S3 itself (credentials from the default boto3 chain: env, profile, IRSA); tests point it at loopback.
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"

    ops_metrics_dir: Path | None = None
    ops_chunk_bytes: int = Field(default=8 * MIB, ge=1024, le=64 * MIB)
    ops_part_bytes: int = Field(default=16 * MIB, ge=S3_MIN_PART_BYTES, le=512 * MIB)

    backup_retention_days: int = Field(default=35, ge=1, le=3650)

    archive_after_days: int = Field(default=90, ge=1, le=36500)
    prometheus_url: str | None = None
    prometheus_step_s: int = Field(default=300, ge=15, le=86_400)
    # PromQL expressions snapshotted into the archive (JSON list in the environment).
    prometheus_series: list[str] = Field(default_factory=list, max_length=200)

    def bucket(self) -> str:
        """The configured bucket; a one-line error naming the setting when there is none."""
        if not self.s3_bucket:
            raise ConfigurationError(f"{env_name('s3_bucket')}: required by `aether ops` (the S3 bucket to use)")
        return self.s3_bucket

    def metrics_dir(self) -> Path:
        """Where the last-success metric files go (default `$AETHER_HOME/metrics`)."""
        if self.ops_metrics_dir is not None:
            return self.ops_metrics_dir
        return Path(os.environ.get("AETHER_HOME", ".aether")) / "metrics"
