"""Benchmark: a flood of bad logins from many addresses against the accounts service, with health reads alongside.

Workload: one accounts process (`aether serve accounts`) on a fresh database `aether_bench_login`, behind a
trusted proxy (AETHER_TRUSTED_PROXIES=["127.0.0.1"]); `--flood` concurrent logins with a wrong password for one
real user, each from its own client address (X-Forwarded-For 10.x.y.z), fired at once (`--rounds` times), while
a separate connection reads `/healthz` every `--sample-ms` ms (and for `--quiet-s` s before, without a flood, as
the machine's own baseline). Then the real user logs in from a clean address.

Reports the health-read latency (p50, p99, max, in ms) during the flood, the flood's answers by status, and the
real user's login status (200 = nobody locked out). Prints one JSON line. Needs the stack (`aether stack up`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database, stack_env  # noqa: E402
from shared.auth.keys import generate_private_key, private_key_pem, public_key_pem  # noqa: E402
from shared.auth.roles import Role, default_scopes  # noqa: E402
from shared.auth.tokens import TokenIssuer  # noqa: E402

PORT = 18_004
BENCH_DB = "aether_bench_login"
PASSWORD = "Bench horse 42 battery"  # noqa: S105 - the benchmark user, on a throwaway database


async def wait_ready(client: httpx.AsyncClient, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("accounts service not ready")


def sample_health(base_url: str, every_s: float, stop: EventType, results: Queue[list[float]]) -> None:
    """In a process of its own, so that the flood's client work never delays (or flatters) a reading."""
    samples: list[float] = []
    with httpx.Client(base_url=base_url, timeout=10) as client:
        while not stop.is_set():
            started = time.perf_counter()
            answer = client.get("/healthz")
            samples.append((time.perf_counter() - started) * 1_000)
            answer.raise_for_status()
            time.sleep(every_s)
    results.put(samples)


class HealthSampler:
    """Reads /healthz every `every_s` seconds from a child process between `start()` and `stop()`."""

    def __init__(self, base_url: str, every_s: float) -> None:
        self._stop = multiprocessing.Event()
        self._results: Queue[list[float]] = multiprocessing.Queue()
        self._process = multiprocessing.Process(
            target=sample_health, args=(base_url, every_s, self._stop, self._results)
        )

    def start(self) -> None:
        self._process.start()

    async def stop(self) -> list[float]:
        self._stop.set()
        samples = await asyncio.to_thread(self._results.get, True, 60)
        await asyncio.to_thread(self._process.join, 30)
        return samples


async def flood(base_url: str, username: str, size: int, round_no: int) -> Counter[int]:
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:

        async def bad_login(i: int) -> int:
            address = f"10.{round_no % 250}.{i // 250}.{i % 250}"
            answer = await client.post(
                "/auth/login",
                json={"username": username, "password": "Wrong horse 42 battery"},
                headers={"X-Forwarded-For": address},
            )
            return answer.status_code

        return Counter(await asyncio.gather(*(bad_login(i) for i in range(size))))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run(args: argparse.Namespace) -> dict[str, object]:
    env = {**os.environ, **stack_env()}
    database_url = fresh_database(env["AETHER_DATABASE_URL"], BENCH_DB)
    key = generate_private_key()
    key_dir = Path(tempfile.mkdtemp())
    (key_dir / "public.pem").write_bytes(public_key_pem(key.public_key()))
    (key_dir / "private.pem").write_bytes(private_key_pem(key))
    env.update(
        AETHER_DATABASE_URL=database_url,
        AETHER_JWT_PUBLIC_KEY_FILE=str(key_dir / "public.pem"),
        AETHER_JWT_PRIVATE_KEY_FILE=str(key_dir / "private.pem"),
        AETHER_LOCAL_KEK_FILE=str(key_dir / "kek.json"),
        AETHER_TRUSTED_PROXIES='["127.0.0.1"]',
        AETHER_LOG_LEVEL="WARNING",
    )
    server = subprocess.Popen(  # noqa: S603, ASYNC220 - the server runs for the whole benchmark
        [sys.executable, "-m", "aether", "serve", "accounts", "--port", str(PORT)],
        env=env,
        stdout=(key_dir / "server.log").open("wb"),  # the server's JSON log, for a look after a bad run
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{PORT}"
    admin = TokenIssuer(private_key_pem(key), "aether", "aether-platform").issue(
        "bench", [Role.ADMIN], scopes=default_scopes([Role.ADMIN]), accounts=["*"], ttl_s=3600
    )
    username = f"bench-{os.urandom(3).hex()}"
    statuses: Counter[int] = Counter()
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            await wait_ready(client)
            created = await client.post(
                "/users",
                json={"username": username, "password": PASSWORD, "roles": ["viewer"]},
                headers={"Authorization": f"Bearer {admin}"},
            )
            created.raise_for_status()
            # the same reads with no flood first: what this machine gives anyway
            quiet_sampler = HealthSampler(base_url, args.sample_ms / 1_000)
            quiet_sampler.start()
            await asyncio.sleep(args.quiet_s)
            quiet = await quiet_sampler.stop()
            sampler = HealthSampler(base_url, args.sample_ms / 1_000)
            sampler.start()
            started = time.perf_counter()
            for round_no in range(args.rounds):
                statuses += await flood(base_url, username, args.flood, round_no)
            flood_s = time.perf_counter() - started
            samples = await sampler.stop()
            real = await client.post(
                "/auth/login",
                json={"username": username, "password": PASSWORD},
                headers={"X-Forwarded-For": "192.0.2.10"},
            )
    finally:
        server.terminate()
        server.wait(timeout=15)
    return {
        "bench": "accounts_login_flood",
        "workload": f"{args.rounds} x {args.flood} concurrent bad logins for one user, each from its own address "
        f"(X-Forwarded-For via a trusted proxy); /healthz read every {args.sample_ms} ms meanwhile by another process",
        "flood_s": round(flood_s, 2),
        "flood_statuses": {str(code): count for code, count in sorted(statuses.items())},
        "health_reads": len(samples),
        "health_p50_ms": round(statistics.median(samples), 2),
        "health_p99_ms": round(percentile(samples, 0.99), 2),
        "health_max_ms": round(max(samples), 2),
        "health_p99_ms_without_flood": round(percentile(quiet, 0.99), 2),
        "real_user_login_status": real.status_code,
        "cores": os.cpu_count(),
        "server_log": str(key_dir / "server.log"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample-ms", type=float, default=10.0)
    parser.add_argument("--quiet-s", type=float, default=5.0, help="health reads without a flood first")
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
