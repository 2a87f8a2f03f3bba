"""The local stack (ops/stack/) against the real PostgreSQL, Redis and Kafka processes.

These tests bring the stack up when it is down and leave it running: other suites use it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis

from ops import stack

REPO_ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.stack_cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return stack.up()


def test_status_reports_all_three_running(stack_env: dict[str, str]) -> None:
    components = stack.status()

    assert [item.name for item in components] == ["postgres", "redis", "kafka"]
    assert all(item.running for item in components), components
    assert all(item.pid for item in components), components


def test_status_command_exits_zero_and_lists_all_running(stack_env: dict[str, str]) -> None:
    done = _cli("status")

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("running") == 3
    for address in (f"127.0.0.1:{stack.PG_PORT}", f"127.0.0.1:{stack.REDIS_PORT}", stack.KAFKA_BOOTSTRAP):
        assert address in done.stdout


def test_second_up_starts_nothing_and_returns_quickly(stack_env: dict[str, str]) -> None:
    pids_before = {item.name: item.pid for item in stack.status()}

    started = time.monotonic()
    env = stack.up()
    elapsed_s = time.monotonic() - started

    assert {item.name: item.pid for item in stack.status()} == pids_before
    assert env == stack_env
    assert elapsed_s < 5.0


def test_env_file_has_the_four_exports(stack_env: dict[str, str]) -> None:
    paths = stack.stack_paths()

    assert paths.env_file.read_text().splitlines() == [
        f"export AETHER_DATABASE_URL=postgresql+psycopg://aether:aether@127.0.0.1:{stack.PG_PORT}/aether",
        f"export AETHER_REDIS_URL=redis://127.0.0.1:{stack.REDIS_PORT}/0",
        f"export AETHER_KAFKA_BOOTSTRAP=127.0.0.1:{stack.KAFKA_PORT}",
        f"export AETHER_DATABASE_SUPERUSER_URL=postgresql+psycopg://postgres@/aether?host={paths.pg_run}&port={stack.PG_PORT}",
    ]


def test_env_command_output_evaluates_in_a_shell(stack_env: dict[str, str]) -> None:
    script = f'eval "$({sys.executable} -m ops.stack_cli env)" && echo "$AETHER_REDIS_URL $AETHER_KAFKA_BOOTSTRAP"'
    done = subprocess.run(
        ["/bin/bash", "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"redis://127.0.0.1:{stack.REDIS_PORT}/0 127.0.0.1:{stack.KAFKA_PORT}"


def test_env_urls_reach_the_real_servers(stack_env: dict[str, str]) -> None:
    app_url = stack_env["AETHER_DATABASE_URL"].replace("+psycopg", "")
    with psycopg.connect(app_url) as conn:
        row = conn.execute(
            "SELECT current_user, rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    assert row == ("aether", False, True)

    superuser_url = stack_env["AETHER_DATABASE_SUPERUSER_URL"].replace("+psycopg", "")
    with psycopg.connect(superuser_url) as conn:
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba), current_setting('fsync') FROM pg_database WHERE datname = current_database()"
        ).fetchone()
    assert owner == ("aether", "on")

    client = redis.Redis.from_url(stack_env["AETHER_REDIS_URL"])
    try:
        assert client.ping()
    finally:
        client.close()
