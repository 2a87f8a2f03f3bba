"""What every stack component shares: addresses, the folder layout, errors, progress lines and process helpers."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rich.console import Console

HOST = "127.0.0.1"
# Fixed ports by default; overridable so a second checkout can run its own stack beside the first.
PG_PORT = int(os.environ.get("AETHER_STACK_PG_PORT", "54329"))
REDIS_PORT = int(os.environ.get("AETHER_STACK_REDIS_PORT", "63799"))
KAFKA_PORT = int(os.environ.get("AETHER_STACK_KAFKA_PORT", "19092"))
KAFKA_CONTROLLER_PORT = int(os.environ.get("AETHER_STACK_KAFKA_CONTROLLER_PORT", "19093"))
KAFKA_BOOTSTRAP = f"{HOST}:{KAFKA_PORT}"
REPO_ROOT = Path(__file__).resolve().parents[2]

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


class Progress:
    """A progress line: a spinner while it runs, one line with its duration when done."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.detail = ""


@contextlib.contextmanager
def progress(label: str) -> Iterator[Progress]:
    step = Progress(label)
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
def locked(p: StackPaths) -> Iterator[None]:
    """One stack operation at a time (several test sessions may call ``up()`` together)."""
    p.root.mkdir(parents=True, exist_ok=True)
    with p.lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def rel(path: Path) -> str:
    """A path as the operator typed it: relative to the current directory when below it."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def failure(what: str, log: Path, extra: str = "") -> StackError:
    tail = "\n".join(part for part in (extra.strip(), log_tail(log)) if part)
    return StackError(f"stack: {what}, see {rel(log)}", tail)


def run(
    args: list[str],
    *,
    what: str,
    log: Path,
    timeout_s: float,
    cwd: Path | None = None,
    new_session: bool = False,
    env: dict[str, str] | None = None,
) -> str:
    """Run a fixed command (in `env` when given); on failure raise a one-line StackError carrying its output."""
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
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise failure(f"{what} (timed out after {timeout_s:.0f} s)", log) from exc
    if done.returncode != 0:
        raise failure(f"{what} (exit {done.returncode})", log, done.stdout + done.stderr)
    return done.stdout


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int, marker: str) -> bool:
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


def live_pid(pidfile: Path, marker: str) -> int | None:
    """The pid a pidfile names when that process is alive; a stale pidfile is removed."""
    pid = read_pid(pidfile)
    if pid is not None and pid_alive(pid, marker):
        return pid
    pidfile.unlink(missing_ok=True)
    return None


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_free_ports(component: str, *ports: int) -> None:
    for port in ports:
        if port_open(port):
            raise StackError(
                f"stack: {component} cannot start, port {HOST}:{port} is held by another process (not started by aether stack)"
            )


def terminate(pid: int, marker: str, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid, marker):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while pid_alive(pid, marker):
        time.sleep(0.05)


def wait_until(check: Callable[[], bool], *, timeout_s: float, alive: Callable[[], bool]) -> bool:
    """Poll ``check`` until it is true; False on timeout or when ``alive`` turns false."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        if not alive():
            return False
        time.sleep(0.25)
    return False


def is_root() -> bool:
    return os.geteuid() == 0


def write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def binary_or_install(binary: str, packages: list[str]) -> str:
    """`binary` from PATH; when missing and we are root, apt-get installs `packages` first (loudly on failure)."""
    found = shutil.which(binary)
    if found:
        return found
    wanted = " ".join(packages)
    if not is_root():
        raise StackError(f"stack: {binary} is not on PATH and we are not root to install it (apt-get install {wanted})")
    log = Path("/var/log/apt/term.log")
    with progress(f"install {wanted} (apt-get)"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for args in (["apt-get", "update"], ["apt-get", "install", "-y", *packages]):
            done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)  # noqa: S603 - fixed argument list
            if done.returncode != 0:
                raise failure(f"{' '.join(args)} failed (exit {done.returncode})", log, done.stdout + done.stderr)
    found = shutil.which(binary)
    if not found:
        raise StackError(f"stack: {binary} is still not on PATH after apt-get install {wanted}")
    return found
