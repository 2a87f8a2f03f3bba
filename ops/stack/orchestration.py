"""The whole stack: start, stop and inspect PostgreSQL, Redis and Kafka together, and the settings they give."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

from ops.stack import kafka, postgres, redis
from ops.stack.common import (
    HOST,
    KAFKA_BOOTSTRAP,
    KAFKA_CONTROLLER_PORT,
    PG_PORT,
    REDIS_PORT,
    Component,
    ComponentStatus,
    StackPaths,
    binary_or_install,
    console,
    locked,
    progress,
    rel,
    stack_paths,
)
from ops.stack.postgres import APP_DATABASE, APP_PASSWORD, APP_ROLE, PG_SUPERUSER


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


def up() -> dict[str, str]:
    """Start whatever is not running, wait until all three answer, write ``stack.env``."""
    p = stack_paths()
    started = time.monotonic()
    with locked(p):
        postgres.start(p)
        redis.start(p)
        kafka.start(p)
        p.env_file.write_text(env_text(p))
    _print_summary(p, time.monotonic() - started)
    return stack_env(p)


def down(*, purge: bool = False) -> None:
    """Stop what the pidfiles name (Kafka, Redis, PostgreSQL); with ``purge`` remove their data too."""
    p = stack_paths()
    with locked(p):
        kafka.stop(p)
        redis.stop(p)
        postgres.stop(p)
        if purge:
            _purge(p)


def status() -> list[ComponentStatus]:
    """Each component: running (process alive and answering), pid and address."""
    p = stack_paths()
    return [postgres.status(p), redis.status(p), kafka.status(p)]


def start(component: Component) -> None:
    """Start one component (idempotent)."""
    p = stack_paths()
    with locked(p):
        _STARTERS[component](p)


def stop(component: Component) -> None:
    """Stop one component, by the pid its pidfile names."""
    p = stack_paths()
    with locked(p):
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


def browser_binaries() -> tuple[str, str]:
    """Paths of Debian's headless-capable `chromium` and its `chromedriver` (the director page's browser test),
    installed with apt-get when missing."""
    packages = ["chromium", "chromium-driver"]
    return binary_or_install("chromium", packages), binary_or_install("chromedriver", packages)


def _purge(p: StackPaths) -> None:
    """Remove the data of all three (the Kafka jars stay: they are a download cache)."""
    with progress("purge data"):
        for folder in (p.pg_data, p.redis_dir, p.kafka_data):
            shutil.rmtree(folder, ignore_errors=True)
        for file in (p.env_file, p.pg_log, p.kafka_log, p.kafka_out):
            file.unlink(missing_ok=True)


def _print_summary(p: StackPaths, elapsed_s: float) -> None:
    console.print(f"[bold]stack up[/] in {elapsed_s:.1f} s (home {rel(p.root)})")
    console.print(f"  postgres  {HOST}:{PG_PORT}  socket {p.pg_run}  database {APP_DATABASE} (role {APP_ROLE})")
    console.print(f"  redis     {HOST}:{REDIS_PORT}")
    console.print(
        f"  kafka     {KAFKA_BOOTSTRAP}  (controller {HOST}:{KAFKA_CONTROLLER_PORT}), Apache Kafka {kafka.kafka_version(p)}"
    )
    console.print(f'  env       {rel(p.env_file)}  (eval "$(python -m ops.stack_cli env)")')


_STARTERS: dict[Component, Callable[[StackPaths], None]] = {
    "postgres": postgres.start,
    "redis": redis.start,
    "kafka": kafka.start,
}
_STOPPERS: dict[Component, Callable[[StackPaths], None]] = {
    "postgres": postgres.stop,
    "redis": redis.stop,
    "kafka": kafka.stop,
}
