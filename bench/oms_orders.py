"""Benchmark: orders through the OMS REST API on the paper venue, against the real local stack.

Workload: one OMS process (`aether serve oms`) on a dedicated, freshly migrated database
`aether_bench`; 20 funded paper accounts; a synthetic book published once on the market-data topic;
orders alternate limit buys resting below the market and small market buys, spread over the accounts.

1. Saturation: `--orders` orders with `--concurrency` clients in flight -> sustained orders/s (= max rate).
2. Open loop at 25 %, 50 % and 100 % of that rate for `--seconds` each -> submit-to-ack (HTTP response)
   p50 and p99 in ms, as a client sees it.
3. The ceiling: the same PostgreSQL's single-row INSERT commit rate with 8 pgbench clients.

Several OMS processes (`--oms-processes 2`): the paper venue runs as its own process (`aether serve paper`) and
each OMS process trades on it over HTTP (`AETHER_PAPER_VENUE_URL`), on one database; the accounts are split
among the OMS processes (account n goes to process n mod N, as a router partitioning accounts would) and each
saturating client keeps to its process. `--compare-processes` runs the saturation with one, then two OMS
processes on the venue process (a fresh database each) and prints both figures in the one JSON line, with the
PostgreSQL ceiling of the same run; it skips the open-loop levels.

Also the OMS process's CPU seconds per order during saturation (user + system, from /proc): on a shared machine
the rates move with the neighbours' load, the CPU an order costs much less. `--profile FILE` records the OMS
process with py-spy (when installed) during saturation, as collapsed stacks (`py-spy record -f raw`).

Prints one JSON line. Needs the stack (`aether stack up`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database, stack_env  # noqa: E402
from shared.auth.keys import generate_private_key, private_key_pem, public_key_pem  # noqa: E402
from shared.auth.roles import Role, Scope, default_scopes  # noqa: E402
from shared.auth.tokens import TokenIssuer  # noqa: E402
from shared.config import AetherSettings  # noqa: E402
from shared.db import create_engine  # noqa: E402
from tests.kit.controls import seed_defaults  # noqa: E402

PORT = 18_001  # OMS process n listens on PORT + n
VENUE_PORT = 18_101
ACCOUNTS = 20
BENCH_DB = "aether_bench"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_profiler(pid: int, path: str | None) -> subprocess.Popen[bytes] | None:
    """py-spy recording `pid` into `path` until stopped (None: no profile asked, or py-spy missing)."""
    if path is None:
        return None
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy is not installed: no profile", file=sys.stderr)
        return None
    args = [py_spy, "record", "-p", str(pid), "-r", "100", "-f", "raw", "-o", path, "--nonblocking"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603 - fixed argument list


def stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)  # py-spy writes what it recorded on SIGINT
        profiler.wait(timeout=60)


def pgbench_insert_rate(database_url: str, seconds: int) -> float:
    url = make_url(database_url)
    with psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS public.bench_insert (id bigserial PRIMARY KEY, payload text)")
    script = Path(tempfile.mkdtemp()) / "insert.sql"
    script.write_text("INSERT INTO public.bench_insert (payload) VALUES ('x');\n")
    pgbench = next(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))
    args = [str(pgbench), "-n", "-c", "8", "-j", "2", "-T", str(seconds), "-f", str(script)]
    args += ["-h", str(url.host), "-p", str(url.port), "-U", str(url.username), str(url.database)]
    env = {**os.environ, "PGPASSWORD": str(url.password)}
    output = subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout  # noqa: S603 - fixed argument list
    line = next(line for line in output.splitlines() if line.startswith("tps"))
    return float(line.split("=")[1].split()[0])


async def wait_ready(client: httpx.AsyncClient, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{client.base_url} did not become ready (its log: {LOG_DIR})")


def order_body(i: int) -> dict[str, str]:
    account = f"bench-{i % ACCOUNTS}"
    if i % 2:
        return {
            "account_id": account,
            "client_order_id": uuid.uuid4().hex,
            "symbol": "BTC/USD",
            "side": "buy",
            "type": "market",
            "quantity": "0.0001",
        }
    return {
        "account_id": account,
        "client_order_id": uuid.uuid4().hex,
        "symbol": "BTC/USD",
        "side": "buy",
        "type": "limit",
        "quantity": "0.001",  # 1 USD at 1000: above BTC/USD's minimum notional (0.5)
        "limit_price": "1000",
    }


async def timed_post(client: httpx.AsyncClient, headers: dict[str, str], i: int, samples: list[float]) -> int:
    started = time.perf_counter()
    response = await client.post("/orders", json=order_body(i), headers=headers)
    samples.append(time.perf_counter() - started)
    return response.status_code


async def saturate(
    clients: list[httpx.AsyncClient], headers: dict[str, str], orders: int, concurrency: int
) -> tuple[float, int]:
    """`concurrency` clients in flight; order i's account (i mod ACCOUNTS) is served by process account mod N."""
    processes = len(clients)
    counters = [iter(range(p, orders, processes)) for p in range(processes)]  # order i -> account i % ACCOUNTS
    errors = 0
    samples: list[float] = []

    async def worker(process: int) -> None:
        nonlocal errors
        for i in counters[process]:
            started = time.perf_counter()
            response = await clients[process].post("/orders", json=order_body(i), headers=headers)
            samples.append(time.perf_counter() - started)
            if response.status_code != 201:
                errors += 1
                if errors == 1:
                    print(f"first error: {response.status_code} {response.text[:300]}", file=sys.stderr)

    started = time.perf_counter()
    await asyncio.gather(*(worker(n % processes) for n in range(concurrency)))
    return orders / (time.perf_counter() - started), errors


async def open_loop(
    client: httpx.AsyncClient, headers: dict[str, str], rate: float, seconds: float
) -> dict[str, float]:
    samples: list[float] = []
    tasks = []
    interval = 1 / rate
    started = time.perf_counter()
    i = 0
    while (now := time.perf_counter()) - started < seconds:
        tasks.append(asyncio.create_task(timed_post(client, headers, 1_000_000 + i, samples)))
        i += 1
        await asyncio.sleep(max(0.0, started + i * interval - now))
    codes = await asyncio.gather(*tasks)
    ordered = sorted(samples)
    return {
        "rate_per_s": round(rate, 1),
        "sent": len(tasks),
        "errors": sum(code != 201 for code in codes),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
    }


async def seed(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    for n in range(ACCOUNTS):
        response = await client.post(
            f"/accounts/bench-{n}/paper/deposits",
            json={"asset": "USD", "amount": "100000000", "reference": uuid.uuid4().hex},
            headers=headers,
        )
        response.raise_for_status()


def publish_book(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "data.replay.cli", "replay", "--synthetic", "--speed", "0", "--limit", "50"],
        env=env,
        check=True,
        capture_output=True,
    )


LOG_DIR = Path(tempfile.gettempdir()) / "aether-bench-oms"


def serve(service: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`aether serve service` on `port`, its output in LOG_DIR/<service>-<port>.log (read it when it fails)."""
    LOG_DIR.mkdir(exist_ok=True)
    with (LOG_DIR / f"{service}-{port}.log").open("wb") as log:
        return subprocess.Popen(  # noqa: S603 - the server runs for the whole measurement
            [sys.executable, "-m", "aether", "serve", service, "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(servers: list[subprocess.Popen[bytes]]) -> None:
    for server in servers:
        server.terminate()
    for server in servers:
        server.wait(timeout=15)


async def seed_controls(database_url: str) -> None:
    """The risk and hitl services' defaults (global ACTIVE, both snapshots seen) in the bench database's controls
    copy, as the reliability harness does: the OMS is ready without those services running (on a stack where
    they never published, it would refuse orders and stay unready)."""
    engine = create_engine(AetherSettings(database_url=database_url), application_name="bench-seed")
    try:
        await seed_defaults(engine)
    finally:
        await engine.dispose()


async def bench_env() -> tuple[dict[str, str], str, dict[str, str], TokenIssuer]:
    """The stack's environment on a fresh bench database, a key pair of the run's own; the operator's headers."""
    env = {**os.environ, **stack_env()}
    database_url = fresh_database(env["AETHER_DATABASE_URL"], BENCH_DB)
    await seed_controls(database_url)
    key = generate_private_key()
    key_dir = Path(tempfile.mkdtemp())
    (key_dir / "public.pem").write_bytes(public_key_pem(key.public_key()))
    env.update(
        AETHER_DATABASE_URL=database_url,
        AETHER_JWT_PUBLIC_KEY_FILE=str(key_dir / "public.pem"),
        AETHER_LOG_LEVEL="WARNING",
        AETHER_DATABASE_POOL_SIZE="20",
        AETHER_MARKET_DATA_MAX_AGE_S="3600",  # one book published at the start of a run of minutes
    )
    issuer = TokenIssuer(private_key_pem(key), "aether", "aether-platform")
    token = issuer.issue(
        "bench",
        [Role.OPERATOR, Role.ADMIN],
        scopes=default_scopes([Role.OPERATOR, Role.ADMIN]),
        accounts=["*"],
        ttl_s=3600,
    )
    return env, database_url, {"Authorization": f"Bearer {token}"}, issuer


def start_platform(
    env: dict[str, str], issuer: TokenIssuer, processes: int, venue_process: bool
) -> list[subprocess.Popen[bytes]]:
    """The paper venue process (when asked) first, then `processes` OMS processes on PORT, PORT + 1, ..."""
    servers = []
    oms_env = dict(env)
    if venue_process:
        servers.append(serve("paper", VENUE_PORT, env))
        venue_token = issuer.issue(
            "svc_oms-venue-client", [Role.SERVICE], scopes=[Scope.VENUE_TRADE], accounts=["*"], ttl_s=3600
        )
        oms_env.update(AETHER_PAPER_VENUE_URL=f"http://127.0.0.1:{VENUE_PORT}", AETHER_PAPER_VENUE_TOKEN=venue_token)
    servers += [serve("oms", PORT + n, oms_env) for n in range(processes)]
    return servers


async def saturation(args: argparse.Namespace, processes: int, venue_process: bool) -> dict[str, object]:
    """Seed, publish the book, saturate `processes` OMS processes; the figures and the CPU they spent per order."""
    env, database_url, headers, issuer = await bench_env()
    servers = start_platform(env, issuer, processes, venue_process)
    oms = servers[-processes:]
    limits = httpx.Limits(max_connections=args.concurrency * 2, max_keepalive_connections=args.concurrency * 2)
    try:
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(
                    httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT + n}", limits=limits, timeout=30)
                )
                for n in range(processes)
            ]
            for client in clients:
                await wait_ready(client)
            await seed(clients[0], headers)
            publish_book(env)
            await asyncio.sleep(2)
            cpu_before = sum(cpu_seconds(server.pid) for server in oms)
            profiler = start_profiler(oms[0].pid, args.profile)
            try:
                max_rate, errors = await saturate(clients, headers, args.orders, args.concurrency)
            finally:
                stop_profiler(profiler)
            cpu_per_order = (sum(cpu_seconds(server.pid) for server in oms) - cpu_before) / args.orders
            levels = {}
            at_500 = None
            if not args.compare_processes:
                for share in (0.25, 0.5, 1.0):
                    levels[f"{int(share * 100)}%"] = await open_loop(
                        clients[0], headers, max_rate * share, args.seconds
                    )
                at_500 = await open_loop(clients[0], headers, 500, args.seconds) if max_rate >= 500 else None
    finally:
        stop(servers)
    return {
        "oms_processes": processes,
        "venue": "process" if venue_process else "in the OMS process",
        "orders_per_s_sustained": round(max_rate, 1),
        "saturation_errors": errors,
        "oms_cpu_ms_per_order": round(cpu_per_order * 1000, 2),
        "latency_by_load": levels,
        "latency_at_500_per_s": at_500,
        "database_url": database_url,
    }


async def run(args: argparse.Namespace) -> dict[str, object]:
    workload = (
        f"{args.orders} orders (half market, half resting limit) over {ACCOUNTS} paper accounts, "
        f"{args.concurrency} clients"
    )
    if args.compare_processes:
        runs = [await saturation(args, processes, venue_process=True) for processes in (1, 2)]
        figures: dict[str, object] = {
            "workload": f"{workload}; the paper venue as its own process; accounts split among the OMS processes",
            **{
                f"{r['oms_processes']}_oms": {
                    k: r[k] for k in ("orders_per_s_sustained", "saturation_errors", "oms_cpu_ms_per_order")
                }
                for r in runs
            },
        }
        database_url = str(runs[-1]["database_url"])
    else:
        result = await saturation(args, args.oms_processes, venue_process=args.oms_processes > 1)
        database_url = str(result.pop("database_url"))
        figures = {"workload": f"{workload}; open loop {args.seconds}s per level", **result}
    return {
        "bench": "oms_orders",
        **figures,
        "pg_single_row_insert_commits_per_s_8_clients": round(pgbench_insert_rate(database_url, args.pgbench_s), 1),
        "cores": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pgbench-s", type=int, default=10)
    parser.add_argument("--profile", help="write a py-spy profile of the OMS during saturation to this file")
    parser.add_argument(
        "--oms-processes",
        type=int,
        choices=(1, 2),
        default=1,
        help="OMS processes (2: on the paper venue process, the accounts split between them)",
    )
    parser.add_argument(
        "--compare-processes",
        action="store_true",
        help="saturate 1 then 2 OMS processes on the venue process; both figures in one line (no open loop)",
    )
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
