"""Backup throughput: `aether ops backup` (pg_dump -> AES-256-GCM chunks -> S3 multipart) against plain
`pg_dump --format=custom` to a local file, on the same database in the same run.

Workload: a fresh migrated database with `--rows` market trades (default 400,000, a few tens of MB of dump). S3 is
moto's server on loopback (the test fake, tests/fakes/s3.py; a bench-only use of the `dev` extra), so the figure is
the pipeline's own cost plus a local HTTP upload, not a network's. MB/s = dump bytes (plaintext) / wall seconds.
Prints one JSON line with both figures and their ratio.

Run: `python -m bench.backup [--rows N] [--repeat K]` with the stack up (`ops.stack_cli up`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from bench.common import fresh_database, stack_env
from ops.backup.backup import run_backup
from ops.backup.pg import libpq_url, pg_tool, tool_invocation
from shared.crypto import LocalFileKeyProvider
from tests.fakes.s3 import local_s3

MB = 1_000_000


def _seed(url: str, rows: int) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with (
        psycopg.connect(libpq_url(url)) as conn,
        conn.cursor().copy(
            "COPY marketdata.trades (venue, instrument, trade_id, traded_at, price, quantity, side) FROM STDIN"
        ) as copy,
    ):
        for index in range(rows):
            moment = start + timedelta(milliseconds=index * 37)
            price = f"{60000 + (index * 7919) % 5000}.{index % 100:02d}{index % 9973:04d}"
            copy.write_row(
                (
                    "kraken",
                    "BTC/USD",
                    f"t{index}",
                    moment,
                    price,
                    f"0.{index % 99991 + 1:05d}",
                    "buy" if index % 2 else "sell",
                )
            )


def _plain_dump(url: str, target: Path) -> tuple[float, int]:
    args, env = tool_invocation(url)
    began = time.perf_counter()
    command = [str(pg_tool("pg_dump")), "--format=custom", "--no-password", f"--file={target}", *args]
    subprocess.run(command, env=env, check=True)  # noqa: S603 - fixed argument list
    return time.perf_counter() - began, target.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    env = stack_env()
    url = fresh_database(os.environ.get("AETHER_DATABASE_URL", env["AETHER_DATABASE_URL"]), "aether_bench_backup")
    _seed(url, options.rows)
    with tempfile.TemporaryDirectory() as folder, local_s3() as s3:
        provider = LocalFileKeyProvider(Path(folder) / "kek.json")
        store = s3.store(s3.new_bucket())
        plain: list[float] = []
        sealed: list[float] = []
        size = 0
        for round_ in range(options.repeat):
            seconds, size = _plain_dump(url, Path(folder) / f"plain-{round_}.dump")
            plain.append(size / MB / seconds)
            began = time.perf_counter()
            result = run_backup(
                url, store, provider, chunk_bytes=8 * 2**20, part_bytes=16 * 2**20, backup_id=f"bench-{round_}"
            )
            sealed.append(result.plain_bytes / MB / (time.perf_counter() - began))
    best_plain, best_sealed = max(plain), max(sealed)
    print(json.dumps({
        "bench": "backup",
        "rows": options.rows,
        "dump_mb": round(size / MB, 2),
        "pg_dump_to_file_mb_s": round(best_plain, 1),
        "aether_ops_backup_mb_s": round(best_sealed, 1),
        "ratio": round(best_sealed / best_plain, 3),
        "repeat": options.repeat,
        "runs_mb_s": {"pg_dump": [round(x, 1) for x in plain], "backup": [round(x, 1) for x in sealed]},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
