"""The retention archiver (issue 17): market data older than the policy goes to encrypted Parquet in S3 (moto on
loopback, real boto3) and leaves PostgreSQL only once the archive verified. Killed at random points ten times
(SIGKILL of `aether ops archive` runs, each a process forked by tests/integration/archive_worker.py): after every kill each row is either still in PostgreSQL or in
exactly one verified archive part. A failed upload deletes nothing; a tampered part stops the job. Prometheus
long-range series are snapshotted through its HTTP API (a fake Prometheus on loopback)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from psycopg import sql

from ops.archive.archiver import archive_table, existing_parts, part_keys, read_part
from ops.archive.prometheus import read_snapshot, snapshot
from ops.archive.tables import TIME_SERIES
from ops.storage.errors import IntegrityError, OpsError
from ops.storage.s3 import ObjectStore
from shared.crypto import LocalFileKeyProvider
from tests.conftest import REPO_ROOT, libpq_url
from tests.fakes.s3 import LocalS3
from tests.helpers import own_database

TRADES = TIME_SERIES["marketdata.trades"]
OLD_DAYS = int(os.environ.get("AETHER_SCALE_ARCHIVE_DAYS", "16"))
ROWS_PER_DAY = 10
KILLS = 10
COLUMNS = ("venue", "instrument", "trade_id", "traded_at", "price", "quantity", "side")
Row = tuple[Any, ...]


@pytest.fixture
def archive_db(database_url: str) -> Iterator[str]:
    with own_database(database_url, f"archive_{os.urandom(3).hex()}") as url:
        yield url


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> LocalFileKeyProvider:
    return LocalFileKeyProvider(tmp_path_factory.mktemp("kek") / "kek.json")


def _seed(url: str, old_days: int, now: datetime) -> set[Row]:
    """`old_days` days of trades from 40 days ago, and a recent day the policy keeps."""
    rows: set[Row] = set()
    first = now - timedelta(days=40)
    for day in [*range(old_days), 38]:
        for index in range(ROWS_PER_DAY):
            moment = (first + timedelta(days=day)).replace(hour=index % 24, minute=index, microsecond=index * 7)
            price = Decimal(f"{60000 + day}.{index:02d}1234567890123456")
            rows.add(
                (
                    "kraken",
                    "BTC/USD",
                    f"d{day}-{index}",
                    moment,
                    price,
                    Decimal("0.000000000000000001") * (index + 1),
                    "buy" if index % 2 else "sell",
                )
            )
    with (
        psycopg.connect(libpq_url(url)) as conn,
        conn.cursor().copy(f"COPY marketdata.trades ({', '.join(COLUMNS)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)
    return rows


def _in_postgres(url: str) -> set[Row]:
    with psycopg.connect(libpq_url(url)) as conn:
        query = sql.SQL("SELECT {} FROM marketdata.trades").format(sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))
        return {tuple(row) for row in conn.execute(query).fetchall()}


def _archived(
    store: ObjectStore, provider: LocalFileKeyProvider, seen: dict[tuple[date, int], list[Row]] | None = None
) -> Counter[Row]:
    """Every row of every completed (manifest present) and verified archive part, with its multiplicity.

    `seen` caches parts verified before: a part with a manifest is never written again (the next one gets the
    next number)."""
    cache = {} if seen is None else seen
    found: Counter[Row] = Counter()
    days = {item.key.split("/")[-2] for item in store.listing(store.key("archive", TRADES.table) + "/")}
    for text in days:
        day = date.fromisoformat(text)
        for number in existing_parts(store, TRADES, day):
            if (day, number) not in cache:
                frame = read_part(store, provider, TRADES, day, number)
                cache[(day, number)] = [tuple(row) for row in frame.select(COLUMNS).iter_rows()]
            found.update(cache[(day, number)])
    return found


def _env(s3: LocalS3, bucket: str, url: str, provider: LocalFileKeyProvider, metrics: Path) -> dict[str, str]:
    return {
        **os.environ,
        **s3.env(bucket),
        "AETHER_DATABASE_URL": url,
        "AETHER_LOCAL_KEK_FILE": str(provider.path),
        "AETHER_OPS_METRICS_DIR": str(metrics),
        "AETHER_OPS_CHUNK_BYTES": "4096",
        "COLUMNS": "200",
    }


ARGS = ["archive", "--older-than-days", "10"]  # `aether ops archive ...`


def _run(worker: subprocess.Popen[str], lines: int, delay_s: float) -> tuple[int, str]:
    """One archiver run in `worker`: SIGKILL it `delay_s` after its `lines`-th step line (or let it end).
    Its wait status and output."""
    assert worker.stdin is not None
    assert worker.stdout is not None
    worker.stdin.write("go\n")
    worker.stdin.flush()
    pid = int(worker.stdout.readline().removeprefix("pid "))
    seen: list[str] = []
    for line in worker.stdout:
        if line.startswith("exit "):
            return int(line.removeprefix("exit ")), "".join(seen)
        seen.append(line)
        if sum(": part " in entry or "rows deleted" in entry for entry in seen) == lines:
            threading.Event().wait(delay_s)
            os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"the archive worker ended early:\n{''.join(seen)}")


def test_killed_at_random_points_ten_times_loses_and_duplicates_nothing(
    archive_db: str, s3_server: LocalS3, provider: LocalFileKeyProvider, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    original = _seed(archive_db, OLD_DAYS, now)
    bucket = s3_server.new_bucket()
    store = s3_server.store(bucket)
    env = _env(s3_server, bucket, archive_db, provider, tmp_path)
    seed = int(os.environ.get("AETHER_KILL_SEED", str(random.randrange(1_000_000))))
    rng = random.Random(seed)
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.archive_worker", *ARGS], env=env, cwd=REPO_ROOT, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    verified: dict[tuple[date, int], list[Row]] = {}
    try:
        for kill in range(KILLS):
            status, output = _run(worker, lines=rng.randint(1, 5), delay_s=rng.choice([0.0, rng.uniform(0, 0.05)]))
            assert os.WIFSIGNALED(status), f"run {kill} ended before its kill point:\n{output}"
            in_pg, archived = _in_postgres(archive_db), _archived(store, provider, verified)
            assert [row for row, count in archived.items() if count > 1] == [], f"seed {seed}: duplicated"
            assert original - in_pg - set(archived) == set(), f"seed {seed}: rows lost after kill {kill}\n{output}"
            assert set(archived) <= original
        status, output = _run(worker, lines=-1, delay_s=0)  # the last run goes to its end
        assert os.waitstatus_to_exitcode(status) == 0, output
    finally:
        worker.kill()
        worker.wait()

    recent_cutoff = now - timedelta(days=10)
    in_pg, archived = _in_postgres(archive_db), _archived(store, provider)
    assert in_pg == {
        row for row in original if row[3] >= recent_cutoff.replace(hour=0, minute=0, second=0, microsecond=0)
    }
    assert set(archived) == original - in_pg
    assert max(archived.values()) == 1
    assert (tmp_path / "aether_ops_archive.prom").exists()


class FailingManifests(ObjectStore):
    """S3 that takes the data object but refuses the manifest (the commit marker) of every archive part."""

    def put(self, key: str, body: bytes) -> None:
        if key.endswith(".manifest.json"):
            raise OpsError(f"S3 refused the request on {self.url(key)}: InternalError")
        super().put(key, body)


def test_a_failed_upload_deletes_nothing_and_a_tampered_part_stops_the_job(
    archive_db: str, s3_server: LocalS3, provider: LocalFileKeyProvider
) -> None:
    original = _seed(archive_db, 2, datetime.now(UTC))
    good = s3_server.store(s3_server.new_bucket())
    failing = FailingManifests(good.client, good.bucket, good.prefix)
    cutoff = datetime.now(UTC) - timedelta(days=10)
    with pytest.raises(OpsError, match=r"manifest\.json: InternalError"):
        list(archive_table(archive_db, failing, provider, TRADES, cutoff, chunk_bytes=4096, part_bytes=5 * 2**20))
    assert _in_postgres(archive_db) == original
    assert _archived(good, provider) == Counter()

    results = list(archive_table(archive_db, good, provider, TRADES, cutoff, chunk_bytes=4096, part_bytes=5 * 2**20))
    assert sum(r.archived_rows for r in results) == 2 * ROWS_PER_DAY
    # A part tampered after the fact, while its day still has rows in PostgreSQL: the job stops, deletes nothing.
    day = results[0].day
    data_key, _ = part_keys(good, TRADES, day, 1)
    sealed = good.get(data_key)
    good.put(data_key, sealed[:100] + bytes([sealed[100] ^ 1]) + sealed[101:])
    with psycopg.connect(libpq_url(archive_db)) as conn:
        conn.execute(
            "INSERT INTO marketdata.trades (venue, instrument, trade_id, traded_at, price, quantity, side)"
            " VALUES ('kraken', 'BTC/USD', 'late', %s, 1, 1, 'buy')",
            (datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=5),),
        )
    before = _in_postgres(archive_db)
    with pytest.raises(IntegrityError, match="chunk 0"):
        list(archive_table(archive_db, good, provider, TRADES, cutoff, chunk_bytes=4096, part_bytes=5 * 2**20))
    assert _in_postgres(archive_db) == before


class FakePrometheus(BaseHTTPRequestHandler):
    """`/api/v1/query_range` over two series; a query containing `bad` is refused as Prometheus does."""

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        expression = query["query"][0]
        if "bad" in expression:
            body, status = {"status": "error", "errorType": "bad_data", "error": "parse error at char 4"}, 400
        else:
            start, end, step = float(query["start"][0]), float(query["end"][0]), float(query["step"][0].rstrip("s"))
            stamps = [start + i * step for i in range(int((end - start) // step) + 1)]
            result = [
                {"metric": {"__name__": "up", "job": job}, "values": [[t, str(float(n))] for n, t in enumerate(stamps)]}
                for job in ("oms", "risk")
            ]
            body, status = {"status": "success", "data": {"resultType": "matrix", "result": result}}, 200
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def prometheus_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_prometheus_series_are_snapshotted_through_the_http_api(
    s3_server: LocalS3, provider: LocalFileKeyProvider, prometheus_url: str
) -> None:
    store = s3_server.store(s3_server.new_bucket())
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = start + timedelta(hours=1)
    args: dict[str, Any] = {"chunk_bytes": 4096, "part_bytes": 5 * 2**20}
    result = snapshot(store, provider, prometheus_url, ["avg_over_time(up[5m])"], start, end, 300, **args)
    assert (result.series, result.samples, result.skipped) == (2, 26, False)
    frame = read_snapshot(store, provider, result.object_id)
    assert frame["timestamp"].min() == start
    assert frame["timestamp"].max() == end
    assert sorted(frame["value"].unique().to_list()) == [float(n) for n in range(13)]
    again = snapshot(store, provider, prometheus_url, ["avg_over_time(up[5m])"], start, end, 300, **args)
    assert again.skipped
    with pytest.raises(OpsError, match="Prometheus refused query 'bad_query': parse error at char 4"):
        snapshot(store, provider, prometheus_url, ["bad_query"], start, end + timedelta(hours=1), 300, **args)
    with pytest.raises(OpsError, match="is not before --to"):
        snapshot(store, provider, prometheus_url, ["up"], end, start, 300, **args)
