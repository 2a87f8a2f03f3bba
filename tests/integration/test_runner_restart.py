"""The runner's supervisor restarts a child that dies (SIGKILL) and leaves its sibling running."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator

import pytest

from aether.runner import RestartPolicy, Supervisor
from tests.helpers import eventually

SLEEPER = (sys.executable, "-c", "import time; time.sleep(600)")


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    running = Supervisor(os.environ, RestartPolicy(initial_delay_s=0.1, max_delay_s=0.4, stable_after_s=60.0))
    yield running
    running.stop_all(timeout_s=5.0)


async def test_a_killed_child_comes_back_and_its_sibling_keeps_running(supervisor: Supervisor) -> None:
    supervisor.start("victim", SLEEPER)
    supervisor.start("sibling", SLEEPER)
    victim, sibling = supervisor.process("victim"), supervisor.process("sibling")

    victim.send_signal(signal.SIGKILL)

    async def restarted() -> bool:
        supervisor.tick()
        current = supervisor.process("victim")
        return current is not victim and current.poll() is None

    await eventually(restarted, timeout_s=20.0, message="the killed child was not restarted")
    assert victim.returncode == -signal.SIGKILL
    assert supervisor.crashes("victim") == 1
    assert supervisor.process("sibling") is sibling
    assert sibling.poll() is None


async def test_a_crash_loop_keeps_being_retried(supervisor: Supervisor) -> None:
    supervisor.start("crasher", (sys.executable, "-c", "raise SystemExit(3)"))

    async def crashed_three_times() -> bool:
        supervisor.tick()
        return supervisor.crashes("crasher") >= 3

    await eventually(crashed_three_times, timeout_s=20.0, message="the crashing child was not retried")
