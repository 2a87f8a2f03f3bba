"""Argon2 runs in worker threads behind a bound: past it, a check is refused at once (503), never queued."""

from __future__ import annotations

import asyncio

import pytest

from services.accounts.errors import PasswordCheckBusy
from services.accounts.passwords import PasswordWorkers, hash_password


async def test_checks_past_the_bound_are_refused_and_the_admitted_ones_finish() -> None:
    stored = hash_password("Correct horse 42 battery")
    workers = PasswordWorkers(workers=1, max_pending=2)
    admitted = [asyncio.create_task(workers.verify(stored, "Correct horse 42 battery")) for _ in range(2)]
    await asyncio.sleep(0)  # let both tasks enter the queue
    with pytest.raises(PasswordCheckBusy) as refused:
        await workers.verify(stored, "Correct horse 42 battery")
    assert refused.value.status_code == 503
    assert refused.value.code == "password_check_busy"
    assert await asyncio.gather(*admitted) == [True, True]
    assert await workers.verify(stored, "wrong") is False  # the bound frees up again


async def test_the_event_loop_keeps_running_while_argon2_hashes() -> None:
    workers = PasswordWorkers(workers=2, max_pending=8)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    running = asyncio.create_task(ticker())
    await asyncio.gather(*(workers.verify(None, "anything") for _ in range(4)))
    running.cancel()
    assert ticks > 4  # the loop was free between and during the hashes (they ran in threads)
