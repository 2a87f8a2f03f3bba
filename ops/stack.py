"""The local stack: PostgreSQL, Redis and Apache Kafka started from local binaries, no containers.

- PostgreSQL: the newest server under ``/usr/lib/postgresql/*/bin``, run as the ``postgres`` OS
  user when we are root, listening on 127.0.0.1:54329 and on a unix socket under the stack home.
- Redis: ``redis-server`` from PATH (apt-get installs it when missing and we are root), on
  127.0.0.1:63799, with no persistence: Redis holds only rebuildable state.
- Apache Kafka 4.1.1: a single KRaft node (broker + controller) from jars that Maven fetches
  once (``ops/kafka/pom.xml``), on 127.0.0.1:19092 (controller 19093).

Everything lives under ``AETHER_HOME`` (default ``<repo>/.aether``). Every step is idempotent: a
component whose process is alive and answering is left alone. ``down`` stops exactly the
processes the pidfiles name. Failures raise :class:`StackError`, whose message is one line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
import zipfile
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
import redis
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from psycopg import sql
from rich.console import Console

HOST = "127.0.0.1"
# Fixed ports by default; overridable so a second checkout can run its own stack beside the first.
PG_PORT = int(os.environ.get("AETHER_STACK_PG_PORT", "54329"))
REDIS_PORT = int(os.environ.get("AETHER_STACK_REDIS_PORT", "63799"))
KAFKA_PORT = int(os.environ.get("AETHER_STACK_KAFKA_PORT", "19092"))
KAFKA_CONTROLLER_PORT = int(os.environ.get("AETHER_STACK_KAFKA_CONTROLLER_PORT", "19093"))
KAFKA_BOOTSTRAP = f"{HOST}:{KAFKA_PORT}"
KAFKA_HEALTHCHECK_TOPIC = "aether.stack.healthcheck"
PG_OS_USER = "postgres"
PG_SUPERUSER = "postgres"
APP_ROLE = "aether"
APP_PASSWORD = "aether"  # noqa: S105 - fixed credential of the local development stack, never production
APP_DATABASE = "aether"
PG_ROOT = Path("/usr/lib/postgresql")
REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_POM = REPO_ROOT / "ops" / "kafka" / "pom.xml"

PG_START_TIMEOUT_S = 60
REDIS_START_TIMEOUT_S = 15
KAFKA_START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 30
LOG_TAIL_LINES = 12

Component = Literal["postgres", "redis", "kafka"]
COMPONENTS: tuple[Component, ...] = ("postgres", "redis", "kafka")

console = Console(stderr=True, highlight=False, soft_wrap=True)


class StackError(RuntimeError):
    """A stack step failed. ``str()`` is one line for the operator; ``log_tail`` holds context."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


@dataclass(frozen=True)
class StackPaths:
    """Every file and folder of the stack, under one root."""

    root: Path

    @property
    def pg_dir(self) -> Path:
        return self.root / "pg"

    @property
    def pg_data(self) -> Path:
        return self.pg_dir / "data"

    @property
    def pg_run(self) -> Path:
        return self.pg_dir / "run"

    @property
    def pg_log(self) -> Path:
        return self.pg_dir / "postgres.log"

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    @property
    def redis_pid(self) -> Path:
        return self.redis_dir / "redis.pid"

    @property
    def redis_log(self) -> Path:
        return self.redis_dir / "redis.log"

    @property
    def kafka_dir(self) -> Path:
        return self.root / "kafka"

    @property
    def kafka_libs(self) -> Path:
        return self.kafka_dir / "libs"

    @property
    def kafka_data(self) -> Path:
        return self.kafka_dir / "data"

    @property
    def kafka_pid(self) -> Path:
        return self.kafka_dir / "kafka.pid"

    @property
    def kafka_out(self) -> Path:
        return self.kafka_dir / "kafka.out"

    @property
    def kafka_log(self) -> Path:
        return self.kafka_dir / "server.log"

    @property
    def kafka_properties(self) -> Path:
        return self.kafka_dir / "server.properties"

    @property
    def kafka_log4j(self) -> Path:
        return self.kafka_dir / "log4j.properties"

    @property
    def kafka_log4j2(self) -> Path:
        return self.kafka_dir / "log4j2.properties"

    @property
    def env_file(self) -> Path:
        return self.root / "stack.env"

    @property
    def lock_file(self) -> Path:
        return self.root / "stack.lock"


@dataclass(frozen=True)
class ComponentStatus:
    """What ``status()`` reports for one component."""

    name: Component
    running: bool
    pid: int | None
    address: str


def stack_paths() -> StackPaths:
    """The stack's files: under ``$AETHER_HOME`` when set, else ``<repo root>/.aether``."""
    home = os.environ.get("AETHER_HOME")
    root = Path(home).expanduser().resolve() if home else REPO_ROOT / ".aether"
    return StackPaths(root)


def stack_env(paths: StackPaths | None = None) -> dict[str, str]:
    """The connection settings of the stack, as ``AETHER_*`` environment variables."""
    p = paths or stack_paths()
    return {
        "AETHER_DATABASE_URL": f"postgresql+psycopg://{APP_ROLE}:{APP_PASSWORD}@{HOST}:{PG_PORT}/{APP_DATABASE}",
        "AETHER_REDIS_URL": f"redis://{HOST}:{REDIS_PORT}/0",
        "AETHER_KAFKA_BOOTSTRAP": KAFKA_BOOTSTRAP,
        "AETHER_DATABASE_SUPERUSER_URL": (
            f"postgresql+psycopg://{PG_SUPERUSER}@/{APP_DATABASE}?host={p.pg_run}&port={PG_PORT}"
        ),
    }


def env_text(paths: StackPaths | None = None) -> str:
    """The content of ``stack.env``: one ``export`` line per variable."""
    return "".join(f"export {key}={value}\n" for key, value in stack_env(paths).items())


# --------------------------------------------------------------------------- public operations


def up() -> dict[str, str]:
    """Start whatever is not running, wait until all three answer, write ``stack.env``."""
    p = stack_paths()
    started = time.monotonic()
    with _locked(p):
        _start_postgres(p)
        _start_redis(p)
        _start_kafka(p)
        p.env_file.write_text(env_text(p))
    _print_summary(p, time.monotonic() - started)
    return stack_env(p)


def down(*, purge: bool = False) -> None:
    """Stop what the pidfiles name (Kafka, Redis, PostgreSQL); with ``purge`` remove their data too."""
    p = stack_paths()
    with _locked(p):
        _stop_kafka(p)
        _stop_redis(p)
        _stop_postgres(p)
        if purge:
            _purge(p)


def status() -> list[ComponentStatus]:
    """Each component: running (process alive and answering), pid and address."""
    p = stack_paths()
    return [_postgres_status(p), _redis_status(p), _kafka_status(p)]


def start(component: Component) -> None:
    """Start one component (idempotent)."""
    p = stack_paths()
    with _locked(p):
        _STARTERS[component](p)


def stop(component: Component) -> None:
    """Stop one component, by the pid its pidfile names."""
    p = stack_paths()
    with _locked(p):
        _STOPPERS[component](p)


def start_kafka() -> None:
    """Start only Kafka and wait until a producer can write to it."""
    start("kafka")


def stop_kafka() -> None:
    """Stop only Kafka (the other components keep running)."""
    stop("kafka")


def start_postgres() -> None:
    start("postgres")


def stop_postgres() -> None:
    stop("postgres")


def start_redis() -> None:
    start("redis")


def stop_redis() -> None:
    stop("redis")


# --------------------------------------------------------------------------- shared helpers


class _Step:
    """A progress line: a spinner while it runs, one line with its duration when done."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.detail = ""


@contextlib.contextmanager
def _step(label: str) -> Iterator[_Step]:
    step = _Step(label)
    started = time.monotonic()
    try:
        with console.status(f"{label} ...", spinner="dots"):
            yield step
    except BaseException:
        console.print(f"[red]x[/] {label}", markup=True)
        raise
    elapsed_s = time.monotonic() - started
    detail = f": {step.detail}" if step.detail else ""
    console.print(f"[green]ok[/] {label}{detail} [dim]({elapsed_s:.1f} s)[/]")


@contextlib.contextmanager
def _locked(p: StackPaths) -> Iterator[None]:
    """One stack operation at a time (several test sessions may call ``up()`` together)."""
    p.root.mkdir(parents=True, exist_ok=True)
    with p.lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _rel(path: Path) -> str:
    """A path as the operator typed it: relative to the current directory when below it."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def _failure(what: str, log: Path, extra: str = "") -> StackError:
    tail = "\n".join(part for part in (extra.strip(), _tail(log)) if part)
    return StackError(f"stack: {what}, see {_rel(log)}", tail)


def _run(
    args: list[str], *, what: str, log: Path, timeout_s: float, cwd: Path | None = None, new_session: bool = False
) -> str:
    """Run a fixed command; on failure raise a one-line StackError carrying its output."""
    try:
        done = subprocess.run(  # noqa: S603 - fixed argument lists built in this module, no shell string
            args,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            start_new_session=new_session,
        )
    except subprocess.TimeoutExpired as exc:
        raise _failure(f"{what} (timed out after {timeout_s:.0f} s)", log) from exc
    if done.returncode != 0:
        raise _failure(f"{what} (exit {done.returncode})", log, done.stdout + done.stderr)
    return done.stdout


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int, marker: str) -> bool:
    """Whether ``pid`` runs and its command line contains ``marker`` (guards against pid reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in {"Z", "X"}:
        return False
    # The command line reads empty for a moment while a fresh process is still exec-ing.
    return not cmdline or marker.encode() in cmdline


def _live_pid(pidfile: Path, marker: str) -> int | None:
    """The pid a pidfile names when that process is alive; a stale pidfile is removed."""
    pid = _read_pid(pidfile)
    if pid is not None and _pid_alive(pid, marker):
        return pid
    pidfile.unlink(missing_ok=True)
    return None


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _require_free_ports(component: str, *ports: int) -> None:
    for port in ports:
        if _port_open(port):
            raise StackError(
                f"stack: {component} cannot start, port {HOST}:{port} is held by another process (not started by aether stack)"
            )


def _terminate(pid: int, marker: str, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid, marker):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while _pid_alive(pid, marker):
        time.sleep(0.05)


def _wait_until(check: Callable[[], bool], *, timeout_s: float, alive: Callable[[], bool]) -> bool:
    """Poll ``check`` until it is true; False on timeout or when ``alive`` turns false."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        if not alive():
            return False
        time.sleep(0.25)
    return False


def _is_root() -> bool:
    return os.geteuid() == 0


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


# --------------------------------------------------------------------------- PostgreSQL


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


def pg_bin_dir() -> Path:
    """The newest PostgreSQL server binaries under /usr/lib/postgresql/<version>/bin."""
    servers = sorted(PG_ROOT.glob("*/bin/postgres"), key=lambda binary: _version_key(binary.parent.parent.name))
    if not servers:
        raise StackError(f"stack: no PostgreSQL server found under {PG_ROOT}/*/bin (apt-get install postgresql)")
    return servers[-1].parent


def _as_pg_user(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres OS user when we are root."""
    return ["runuser", "-u", PG_OS_USER, "--", *args] if _is_root() else args


def _pg_owner() -> tuple[int, int]:
    entry = pwd.getpwnam(PG_OS_USER)
    return entry.pw_uid, entry.pw_gid


def _prepare_pg_dirs(p: StackPaths) -> None:
    p.pg_run.mkdir(parents=True, exist_ok=True)
    if not _is_root():
        return
    uid, gid = _pg_owner()
    for path in (p.pg_dir, p.pg_run, p.pg_log):
        if path.exists():
            os.chown(path, uid, gid)
    probe = _as_pg_user(["test", "-x", str(p.pg_dir), "-a", "-w", str(p.pg_dir)])
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:  # noqa: S603 - fixed argument list
        raise StackError(
            f"stack: the {PG_OS_USER} OS user cannot reach {p.pg_dir} (a parent folder is not traversable); "
            "set AETHER_HOME to a folder it can reach, e.g. /var/tmp/aether"
        )


def _pg_conf(p: StackPaths) -> str:
    return (
        "# Written by ops/stack.py on every `aether stack up`; edits here are overwritten.\n"
        f"listen_addresses = '{HOST}'\n"
        f"port = {PG_PORT}\n"
        f"unix_socket_directories = '{p.pg_run}'\n"
        "max_connections = 200\n"
        "shared_buffers = 256MB\n"
        "fsync = on\n"
        "synchronous_commit = on\n"
        "full_page_writes = on\n"
        "password_encryption = 'scram-sha-256'\n"
        "timezone = 'UTC'\n"
        "log_timezone = 'UTC'\n"
        "log_line_prefix = '%m [%p] %q%u@%d '\n"
    )


def _init_pg_cluster(p: StackPaths, bin_dir: Path) -> None:
    if not (p.pg_data / "PG_VERSION").exists():
        args = [str(bin_dir / "initdb"), "-D", str(p.pg_data), "-U", PG_SUPERUSER, "--auth-local=trust"]
        args += ["--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C"]
        _run(_as_pg_user(args), what="postgres initdb failed", log=p.pg_log, timeout_s=120, cwd=p.pg_dir)
    conf = p.pg_data / "aether.conf"
    _write_if_changed(conf, _pg_conf(p))
    if _is_root():
        os.chown(conf, *_pg_owner())
    main_conf = p.pg_data / "postgresql.conf"
    include = "include_if_exists = 'aether.conf'\n"
    if include not in main_conf.read_text():
        with main_conf.open("a") as handle:
            handle.write(f"\n{include}")


def _pg_pid(p: StackPaths) -> int | None:
    pid = _read_pid(p.pg_data / "postmaster.pid")
    return pid if pid is not None and _pid_alive(pid, str(p.pg_data)) else None


def _pg_connect(p: StackPaths) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=str(p.pg_run), port=PG_PORT, user=PG_SUPERUSER, dbname="postgres", connect_timeout=3, autocommit=True
    )


def _pg_answering(p: StackPaths) -> bool:
    try:
        with _pg_connect(p) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _pg_bootstrap(p: StackPaths) -> None:
    """Role ``aether`` (LOGIN, CREATEDB, not superuser) and database ``aether`` it owns, if missing."""
    role, database = sql.Identifier(APP_ROLE), sql.Identifier(APP_DATABASE)
    with _pg_connect(p) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone() is None:
            create_role = sql.SQL("CREATE ROLE {} LOGIN CREATEDB NOSUPERUSER PASSWORD {}")
            conn.execute(create_role.format(role, sql.Literal(APP_PASSWORD)))
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (APP_DATABASE,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(database, role))
    # The real check: the application's own login over TCP with its password.
    with psycopg.connect(
        host=HOST, port=PG_PORT, user=APP_ROLE, password=APP_PASSWORD, dbname=APP_DATABASE, connect_timeout=5
    ) as conn:
        conn.execute("SELECT 1")


def _pg_ctl(p: StackPaths, action: str, *, wait_s: int, what: str) -> None:
    """``pg_ctl start`` (log to postgres.log) or ``pg_ctl stop -m fast``, waiting up to ``wait_s``."""
    options = ["-l", str(p.pg_log)] if action == "start" else ["-m", "fast"]
    command = [str(pg_bin_dir() / "pg_ctl"), "-D", str(p.pg_data), *options, "-w", "-t", str(wait_s), "-s", action]
    _run(_as_pg_user(command), what=what, log=p.pg_log, timeout_s=wait_s + 5, cwd=p.pg_dir)


def _start_postgres(p: StackPaths) -> None:
    with _step(f"postgres {HOST}:{PG_PORT}") as step:
        bin_dir = pg_bin_dir()
        _prepare_pg_dirs(p)
        pid = _pg_pid(p)
        if pid is not None and _pg_answering(p):
            step.detail = f"already running (pid {pid})"
        else:
            if pid is None:
                _require_free_ports("postgres", PG_PORT)
            _init_pg_cluster(p, bin_dir)
            _pg_ctl(p, "start", wait_s=PG_START_TIMEOUT_S, what="postgres failed to start")
            step.detail = f"started PostgreSQL {bin_dir.parent.name} (pid {_pg_pid(p)})"
        try:
            _pg_bootstrap(p)
        except psycopg.Error as exc:
            raise _failure("postgres is up but the aether role/database check failed", p.pg_log, str(exc)) from exc


def _stop_postgres(p: StackPaths) -> None:
    with _step("stop postgres") as step:
        pid = _pg_pid(p)
        if pid is None:
            step.detail = "not running"
            return
        _pg_ctl(p, "stop", wait_s=STOP_TIMEOUT_S, what="postgres failed to stop")
        step.detail = f"stopped (pid {pid})"


def _postgres_status(p: StackPaths) -> ComponentStatus:
    pid = _pg_pid(p)
    running = pid is not None and _pg_answering(p)
    return ComponentStatus("postgres", running, pid, f"{HOST}:{PG_PORT} (socket {_rel(p.pg_run)})")


# --------------------------------------------------------------------------- Redis


def _redis_binary() -> str:
    return _binary_or_install("redis-server", ["redis-server"])


def browser_binaries() -> tuple[str, str]:
    """Paths of Debian's headless-capable `chromium` and its `chromedriver` (the director page's browser test),
    installed with apt-get when missing."""
    packages = ["chromium", "chromium-driver"]
    return _binary_or_install("chromium", packages), _binary_or_install("chromedriver", packages)


def _binary_or_install(binary: str, packages: list[str]) -> str:
    """`binary` from PATH; when missing and we are root, apt-get installs `packages` first (loudly on failure)."""
    found = shutil.which(binary)
    if found:
        return found
    wanted = " ".join(packages)
    if not _is_root():
        raise StackError(f"stack: {binary} is not on PATH and we are not root to install it (apt-get install {wanted})")
    log = Path("/var/log/apt/term.log")
    with _step(f"install {wanted} (apt-get)"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for args in (["apt-get", "update"], ["apt-get", "install", "-y", *packages]):
            done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)  # noqa: S603 - fixed argument list
            if done.returncode != 0:
                raise _failure(f"{' '.join(args)} failed (exit {done.returncode})", log, done.stdout + done.stderr)
    found = shutil.which(binary)
    if not found:
        raise StackError(f"stack: {binary} is still not on PATH after apt-get install {wanted}")
    return found


def _redis_answering() -> bool:
    client = redis.Redis(host=HOST, port=REDIS_PORT, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _redis_args(p: StackPaths, binary: str) -> list[str]:
    return [
        binary, "--port", str(REDIS_PORT), "--bind", HOST, "--dir", str(p.redis_dir),
        "--pidfile", str(p.redis_pid), "--logfile", str(p.redis_log), "--daemonize", "yes",
        "--save", "", "--appendonly", "no",
    ]  # fmt: skip


def _start_redis(p: StackPaths) -> None:
    binary = _redis_binary()
    with _step(f"redis {HOST}:{REDIS_PORT}") as step:
        p.redis_dir.mkdir(parents=True, exist_ok=True)
        pid = _live_pid(p.redis_pid, "redis-server")
        if pid is not None and _redis_answering():
            step.detail = f"already running (pid {pid})"
            return
        if pid is None:
            _require_free_ports("redis", REDIS_PORT)
            _run(_redis_args(p, binary), what="redis failed to start", log=p.redis_log, timeout_s=REDIS_START_TIMEOUT_S)

        def alive() -> bool:  # the daemon writes its pidfile a moment after forking
            daemon_pid = _read_pid(p.redis_pid)
            return daemon_pid is None or _pid_alive(daemon_pid, "redis-server")

        if not _wait_until(_redis_answering, timeout_s=REDIS_START_TIMEOUT_S, alive=alive):
            raise _failure("redis failed to start", p.redis_log)
        step.detail = f"started (pid {_read_pid(p.redis_pid)})"


def _stop_redis(p: StackPaths) -> None:
    with _step("stop redis") as step:
        pid = _live_pid(p.redis_pid, "redis-server")
        if pid is None:
            step.detail = "not running"
            return
        _terminate(pid, "redis-server")
        p.redis_pid.unlink(missing_ok=True)
        step.detail = f"stopped (pid {pid})"


def _redis_status(p: StackPaths) -> ComponentStatus:
    pid = _live_pid(p.redis_pid, "redis-server")
    running = pid is not None and _redis_answering()
    return ComponentStatus("redis", running, pid, f"{HOST}:{REDIS_PORT}")


# --------------------------------------------------------------------------- Apache Kafka


def _kafka_properties(p: StackPaths) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{KAFKA_CONTROLLER_PORT}",
        "listeners": f"PLAINTEXT://{HOST}:{KAFKA_PORT},CONTROLLER://{HOST}:{KAFKA_CONTROLLER_PORT}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{KAFKA_PORT}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(p.kafka_data),
        "num.partitions": "3",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
    }
    lines = [f"{key}={value}" for key, value in settings.items()]
    return (
        "# Written by ops/stack.py on every `aether stack up`; edits here are overwritten.\n" + "\n".join(lines) + "\n"
    )


def _kafka_log4j(p: StackPaths) -> str:
    """log4j 1.x (reload4j) settings: everything to server.log, nothing on the console."""
    appender = "log4j.appender.file"
    return "\n".join([
        "log4j.rootLogger=INFO, file",
        f"{appender}=org.apache.log4j.RollingFileAppender",
        f"{appender}.File={p.kafka_log}",
        f"{appender}.MaxFileSize=50MB",
        f"{appender}.MaxBackupIndex=2",
        f"{appender}.layout=org.apache.log4j.PatternLayout",
        f"{appender}.layout.ConversionPattern=[%d] %p %m (%c)%n",
        "log4j.logger.kafka.request.logger=WARN",
        "log4j.logger.org.apache.kafka.clients=WARN",
        "",
    ])  # fmt: skip


def _kafka_log4j2(p: StackPaths) -> str:
    """log4j2 settings: Kafka 4 also touches log4j2 directly (its log-level controller); without a
    configuration log4j2 prints an error on stdout. Its few records go to log4j2.log."""
    return "\n".join([
        "status = warn",
        "appender.file.type = File",
        "appender.file.name = file",
        f"appender.file.fileName = {p.kafka_dir / 'log4j2.log'}",
        "appender.file.layout.type = PatternLayout",
        "appender.file.layout.pattern = [%d] %p %m (%c)%n",
        "rootLogger.level = info",
        "rootLogger.appenderRef.file.ref = file",
        "",
    ])  # fmt: skip


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate is not None and candidate.exists():
        return str(candidate)
    found = shutil.which("java")
    if not found:
        raise StackError(
            "stack: java is not on PATH (Kafka needs a Java 17+ runtime: apt-get install openjdk-17-jre-headless)"
        )
    return found


def _kafka_jars_present(p: StackPaths) -> bool:
    return any(p.kafka_libs.glob("kafka_2.13-*.jar")) and any(p.kafka_libs.glob("kafka-clients-*.jar"))


def _fetch_kafka_jars(p: StackPaths) -> None:
    if _kafka_jars_present(p):
        return
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError("stack: mvn is not on PATH; it fetches the Kafka jars once (apt-get install maven)")
    with _step("fetch Apache Kafka jars (maven)"):
        args = [mvn, "-q", "-B", "-f", str(KAFKA_POM), "dependency:copy-dependencies"]
        args += [f"-DoutputDirectory={p.kafka_libs}", "-DincludeScope=runtime"]
        _run(args, what="maven could not fetch the Kafka jars", log=KAFKA_POM, timeout_s=600)


def _java_args(
    p: StackPaths, main_class: str, *args: str, heap: tuple[str, str] = ("-Xms64m", "-Xmx256m")
) -> list[str]:
    return [
        _java(), *heap, "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j.configuration={p.kafka_log4j.as_uri()}", f"-Dlog4j2.configurationFile={p.kafka_log4j2}",
        f"-Dkafka.logs.dir={p.kafka_dir}",
        "-cp", f"{p.kafka_libs}/*", main_class, *args,
    ]  # fmt: skip


def _new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes in url-safe base64 without padding (like Uuid.randomUuid())."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _prepare_kafka(p: StackPaths) -> None:
    p.kafka_dir.mkdir(parents=True, exist_ok=True)
    _fetch_kafka_jars(p)
    _write_if_changed(p.kafka_properties, _kafka_properties(p))
    _write_if_changed(p.kafka_log4j, _kafka_log4j(p))
    _write_if_changed(p.kafka_log4j2, _kafka_log4j2(p))
    if not (p.kafka_data / "meta.properties").exists():
        args = ["format", "-t", _new_cluster_id(), "-c", str(p.kafka_properties), "--ignore-formatted"]
        with _step("format kafka storage (KRaft)"):
            _run(
                _java_args(p, "kafka.tools.StorageTool", *args),
                what="kafka storage format failed",
                log=p.kafka_log,
                timeout_s=120,
            )


def _spawn_kafka(p: StackPaths) -> int:
    """Start the broker detached: through a short-lived ``sh`` in a new session, so the JVM is
    not our child (no zombie, no ResourceWarning, survives this process); returns the JVM pid."""
    args = _java_args(p, "kafka.Kafka", str(p.kafka_properties), heap=("-Xms256m", "-Xmx768m"))
    detach = 'out="$1"; shift; "$@" </dev/null >>"$out" 2>&1 & echo $!'
    launched = _run(
        ["/bin/sh", "-c", detach, "sh", str(p.kafka_out), *args],
        what="kafka failed to launch",
        log=p.kafka_out,
        timeout_s=10,
        cwd=p.kafka_dir,
        new_session=True,
    )
    pid = int(launched.strip())
    p.kafka_pid.write_text(f"{pid}\n")
    return pid


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine to completion, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(factory())
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, factory()).result()


async def _kafka_produce_healthcheck(timeout_s: float) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=KAFKA_BOOTSTRAP, request_timeout_ms=int(timeout_s * 1000), client_id="aether-stack"
    )
    try:
        async with asyncio.timeout(timeout_s):
            await producer.start()
            await producer.send_and_wait(KAFKA_HEALTHCHECK_TOPIC, b"ping")
    finally:
        await producer.stop()


@contextlib.contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    """aiokafka logs every refused connection while the broker boots; hide that from the console."""
    logger = logging.getLogger("aiokafka")
    previous = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _kafka_answering(timeout_s: float = 5.0) -> bool:
    """A real producer can write to the health-check topic."""
    if not _port_open(KAFKA_PORT):
        return False
    try:
        with _quiet_aiokafka():
            _run_coroutine(lambda: _kafka_produce_healthcheck(timeout_s))
    except (KafkaError, OSError, TimeoutError):
        return False
    return True


def kafka_version(paths: StackPaths | None = None) -> str:
    """Apache Kafka's version, as the broker logged it ("Kafka version: ..."), else from kafka-clients' jar."""
    p = paths or stack_paths()
    logged = re.findall(r"Kafka version: (\S+)", _tail(p.kafka_log, lines=2000))
    if logged:
        return str(logged[-1])
    for jar in sorted(p.kafka_libs.glob("kafka-clients-*.jar")):
        with zipfile.ZipFile(jar) as archive:
            text = archive.read("kafka/kafka-version.properties").decode()
        found = re.search(r"^version=(\S+)", text, re.MULTILINE)
        if found:
            return found.group(1)
    return "unknown"


def _start_kafka(p: StackPaths) -> None:
    _prepare_kafka(p)
    with _step(f"kafka {KAFKA_BOOTSTRAP}") as step:
        pid = _live_pid(p.kafka_pid, "kafka.Kafka")
        if pid is not None and _kafka_answering():
            step.detail = f"already running (pid {pid}), Apache Kafka {kafka_version(p)}"
            return
        if pid is None:
            _require_free_ports("kafka", KAFKA_PORT, KAFKA_CONTROLLER_PORT)
            pid = _spawn_kafka(p)
        kafka_pid = pid

        def alive() -> bool:
            return _pid_alive(kafka_pid, "kafka.Kafka")

        if not _wait_until(_kafka_answering, timeout_s=KAFKA_START_TIMEOUT_S, alive=alive):
            raise _failure("kafka failed to start", p.kafka_log, _tail(p.kafka_out, lines=5))
        step.detail = f"started (pid {pid}), Apache Kafka {kafka_version(p)}"


def _stop_kafka(p: StackPaths) -> None:
    with _step("stop kafka") as step:
        pid = _live_pid(p.kafka_pid, "kafka.Kafka")
        if pid is None:
            step.detail = "not running"
            return
        _terminate(pid, "kafka.Kafka")
        p.kafka_pid.unlink(missing_ok=True)
        step.detail = f"stopped (pid {pid})"


def _kafka_status(p: StackPaths) -> ComponentStatus:
    pid = _live_pid(p.kafka_pid, "kafka.Kafka")
    running = pid is not None and _kafka_answering()
    return ComponentStatus("kafka", running, pid, f"{KAFKA_BOOTSTRAP} (controller {HOST}:{KAFKA_CONTROLLER_PORT})")


# --------------------------------------------------------------------------- down --purge, summary


def _purge(p: StackPaths) -> None:
    """Remove the data of all three (the Kafka jars stay: they are a download cache)."""
    with _step("purge data"):
        for folder in (p.pg_data, p.redis_dir, p.kafka_data):
            shutil.rmtree(folder, ignore_errors=True)
        for file in (p.env_file, p.pg_log, p.kafka_log, p.kafka_out):
            file.unlink(missing_ok=True)


def _print_summary(p: StackPaths, elapsed_s: float) -> None:
    console.print(f"[bold]stack up[/] in {elapsed_s:.1f} s (home {_rel(p.root)})")
    console.print(f"  postgres  {HOST}:{PG_PORT}  socket {p.pg_run}  database {APP_DATABASE} (role {APP_ROLE})")
    console.print(f"  redis     {HOST}:{REDIS_PORT}")
    console.print(
        f"  kafka     {KAFKA_BOOTSTRAP}  (controller {HOST}:{KAFKA_CONTROLLER_PORT}), Apache Kafka {kafka_version(p)}"
    )
    console.print(f'  env       {_rel(p.env_file)}  (eval "$(python -m ops.stack_cli env)")')


_STARTERS: dict[Component, Callable[[StackPaths], None]] = {
    "postgres": _start_postgres,
    "redis": _start_redis,
    "kafka": _start_kafka,
}
_STOPPERS: dict[Component, Callable[[StackPaths], None]] = {
    "postgres": _stop_postgres,
    "redis": _stop_redis,
    "kafka": _stop_kafka,
}
