"""PostgreSQL: the newest server under ``/usr/lib/postgresql/*/bin``, run as the ``postgres`` OS user when we are
root, listening on 127.0.0.1:54329 and on a unix socket under the stack home."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ops.stack.common import (
    HOST,
    PG_PORT,
    STOP_TIMEOUT_S,
    ComponentStatus,
    StackError,
    StackPaths,
    failure,
    is_root,
    pid_alive,
    progress,
    read_pid,
    rel,
    require_free_ports,
    run,
    write_if_changed,
)

PG_OS_USER = "postgres"
PG_SUPERUSER = "postgres"
APP_ROLE = "aether"
APP_PASSWORD = "aether"  # noqa: S105 - fixed credential of the local development stack, never production
APP_DATABASE = "aether"
PG_ROOT = Path("/usr/lib/postgresql")
PG_START_TIMEOUT_S = 60


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
    return ["runuser", "-u", PG_OS_USER, "--", *args] if is_root() else args


def _pg_owner() -> tuple[int, int]:
    entry = pwd.getpwnam(PG_OS_USER)
    return entry.pw_uid, entry.pw_gid


def _prepare_pg_dirs(p: StackPaths) -> None:
    p.pg_run.mkdir(parents=True, exist_ok=True)
    if not is_root():
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
        "# Written by ops/stack/postgres.py on every `aether stack up`; edits here are overwritten.\n"
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
        run(_as_pg_user(args), what="postgres initdb failed", log=p.pg_log, timeout_s=120, cwd=p.pg_dir)
    conf = p.pg_data / "aether.conf"
    write_if_changed(conf, _pg_conf(p))
    if is_root():
        os.chown(conf, *_pg_owner())
    main_conf = p.pg_data / "postgresql.conf"
    include = "include_if_exists = 'aether.conf'\n"
    if include not in main_conf.read_text():
        with main_conf.open("a") as handle:
            handle.write(f"\n{include}")


def _pg_pid(p: StackPaths) -> int | None:
    pid = read_pid(p.pg_data / "postmaster.pid")
    return pid if pid is not None and pid_alive(pid, str(p.pg_data)) else None


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
    run(_as_pg_user(command), what=what, log=p.pg_log, timeout_s=wait_s + 5, cwd=p.pg_dir)


def start(p: StackPaths) -> None:
    with progress(f"postgres {HOST}:{PG_PORT}") as step:
        bin_dir = pg_bin_dir()
        _prepare_pg_dirs(p)
        pid = _pg_pid(p)
        if pid is not None and _pg_answering(p):
            step.detail = f"already running (pid {pid})"
        else:
            if pid is None:
                require_free_ports("postgres", PG_PORT)
            _init_pg_cluster(p, bin_dir)
            _pg_ctl(p, "start", wait_s=PG_START_TIMEOUT_S, what="postgres failed to start")
            step.detail = f"started PostgreSQL {bin_dir.parent.name} (pid {_pg_pid(p)})"
        try:
            _pg_bootstrap(p)
        except psycopg.Error as exc:
            raise failure("postgres is up but the aether role/database check failed", p.pg_log, str(exc)) from exc


def stop(p: StackPaths) -> None:
    with progress("stop postgres") as step:
        pid = _pg_pid(p)
        if pid is None:
            step.detail = "not running"
            return
        _pg_ctl(p, "stop", wait_s=STOP_TIMEOUT_S, what="postgres failed to stop")
        step.detail = f"stopped (pid {pid})"


def status(p: StackPaths) -> ComponentStatus:
    pid = _pg_pid(p)
    running = pid is not None and _pg_answering(p)
    return ComponentStatus("postgres", running, pid, f"{HOST}:{PG_PORT} (socket {rel(p.pg_run)})")
