"""Redis: ``redis-server`` from PATH (apt-get installs it when missing and we are root), on 127.0.0.1:63799, with no
persistence: Redis holds only rebuildable state."""

from __future__ import annotations

import redis

from ops.stack.common import (
    HOST,
    REDIS_PORT,
    ComponentStatus,
    StackPaths,
    binary_or_install,
    failure,
    live_pid,
    pid_alive,
    progress,
    read_pid,
    require_free_ports,
    run,
    terminate,
    wait_until,
)

REDIS_START_TIMEOUT_S = 15


def _redis_binary() -> str:
    return binary_or_install("redis-server", ["redis-server"])


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


def start(p: StackPaths) -> None:
    binary = _redis_binary()
    with progress(f"redis {HOST}:{REDIS_PORT}") as step:
        p.redis_dir.mkdir(parents=True, exist_ok=True)
        pid = live_pid(p.redis_pid, "redis-server")
        if pid is not None and _redis_answering():
            step.detail = f"already running (pid {pid})"
            return
        if pid is None:
            require_free_ports("redis", REDIS_PORT)
            run(_redis_args(p, binary), what="redis failed to start", log=p.redis_log, timeout_s=REDIS_START_TIMEOUT_S)

        def alive() -> bool:  # the daemon writes its pidfile a moment after forking
            daemon_pid = read_pid(p.redis_pid)
            return daemon_pid is None or pid_alive(daemon_pid, "redis-server")

        if not wait_until(_redis_answering, timeout_s=REDIS_START_TIMEOUT_S, alive=alive):
            raise failure("redis failed to start", p.redis_log)
        step.detail = f"started (pid {read_pid(p.redis_pid)})"


def stop(p: StackPaths) -> None:
    with progress("stop redis") as step:
        pid = live_pid(p.redis_pid, "redis-server")
        if pid is None:
            step.detail = "not running"
            return
        terminate(pid, "redis-server")
        p.redis_pid.unlink(missing_ok=True)
        step.detail = f"stopped (pid {pid})"


def status(p: StackPaths) -> ComponentStatus:
    pid = live_pid(p.redis_pid, "redis-server")
    running = pid is not None and _redis_answering()
    return ComponentStatus("redis", running, pid, f"{HOST}:{REDIS_PORT}")
