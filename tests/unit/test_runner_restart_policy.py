"""The runner's restart policy: exponential backoff, capped, forgotten after a stable run (pure, no processes)."""

from __future__ import annotations

import pytest

from aether.runner import RestartPolicy

POLICY = RestartPolicy(initial_delay_s=1.0, max_delay_s=30.0, stable_after_s=60.0)


def test_delay_doubles_from_the_initial_delay() -> None:
    assert [POLICY.delay_s(crashes) for crashes in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_delay_is_capped_and_a_crash_loop_is_still_retried() -> None:
    assert POLICY.delay_s(6) == 30.0
    assert POLICY.delay_s(10_000) == 30.0


def test_delay_needs_a_crash() -> None:
    with pytest.raises(ValueError, match="crashes"):
        POLICY.delay_s(0)


def test_quick_crashes_count_up() -> None:
    crashes = 0
    for _ in range(4):
        crashes = POLICY.crashes_after_exit(crashes, uptime_s=0.5)
    assert crashes == 4


def test_a_stable_run_forgets_earlier_crashes() -> None:
    assert POLICY.crashes_after_exit(7, uptime_s=59.9) == 8
    assert POLICY.crashes_after_exit(7, uptime_s=60.0) == 1
