"""R4: a redelivered or reordered message changes nothing twice.

Venue updates. Seeded orders are recorded in the OMS (SUBMITTED, funds reserved) and sent to the real
paper venue; public trades then print through the resting ones in small lots (many partial fills), some
are canceled at the venue, IOC orders fill partly and lose their remainder. Every message the OMS would
receive from the venue (the submit and cancel answers, and every fill and status the venue publishes to
its listeners) is captured instead of being applied. The stream is then delivered to the OMS through
`apply_update`: each message 1 to 3 times (a later copy up to 30 messages later), about 5 % of each
order's messages swapped with the next one of the same order, and 10 % of the closing statuses of orders
with fills moved, every copy, ahead of their order's last fill; accounts are applied concurrently, each in
its delivery order. Then a second OrderService ("after a restart") applies the whole stream again, which
must change no row. Checked: no fill recorded or applied twice, every order's filled quantity = the sum
of its fills, every position = buys - sells of its fills, ledger totals = the paper venue's balances,
order states = the venue's (the `divergences` comparison shared with R2). The accounts hold base only
from fills (bought before the capture), since a sold deposit never takes a position below zero.

Commands. `SubmitOrder` commands go to a topic of the test's own, each published 1 to 3 times, some
re-issued under a new event id with the same body (and some with another body), 5 % reordered; a
ConsumerLoop with the OMS's `handle_command` consumes them, the resolver sends the recorded orders, then
`CancelOrder` commands arrive the same way; finally a consumer of a new group replays the whole topic
(offsets lost in a rebalance). Checked: one order and one venue order per client id, one venue submit per
order, one cancel per canceled order, each different-body re-issue rejected once, the replay absorbed.

Size: 150 orders on 6 accounts with 300 trade prints, 160 submit commands (`AETHER_RELIABILITY_SCALE`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from tests.helpers import own_database
from tests.reliability.conftest import RecordWriter
from tests.reliability.oms_harness import SCALE
from tests.reliability.r4_commands import command_part
from tests.reliability.r4_venue_stream import venue_stream_part

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def r4_database_url(database_url: str) -> Iterator[str]:
    """`resolve_stale` sends every stale SUBMITTED order of its database: give it one of its own."""
    with own_database(database_url, "r4") as url:
        yield url


async def test_r4_redelivered_or_reordered_messages_change_nothing_twice(
    r4_database_url: str,
    redis_url: str,
    kafka_bootstrap: str,
    reliability_seed: int,
    write_reliability_record: RecordWriter,
) -> None:
    engine = create_async_engine(r4_database_url, pool_size=2)
    try:
        stream = await venue_stream_part(r4_database_url, redis_url, kafka_bootstrap, reliability_seed, engine)
        commands = await command_part(r4_database_url, redis_url, kafka_bootstrap, reliability_seed, engine)
    finally:
        await engine.dispose()
    stream_violations, commands_violations = stream.pop("_violations"), commands.pop("_violations")
    examples = [*stream.pop("_examples"), *commands.pop("_examples")]
    violations = {
        **{f"stream.{name}": n for name, n in stream_violations.items()},
        **{f"commands.{name}": n for name, n in commands_violations.items()},
    }
    record = {
        "id": "R4-redelivery",
        "seed": reliability_seed,
        "cases": stream["deliveries"] + stream["replay_messages"] + commands["records"] + commands["replayed_records"],
        "violations": sum(violations.values()),
        "double_applied_fills": stream_violations["fills_recorded_twice"] + stream_violations["fills_applied_twice"],
        "position_not_sum_of_fills": stream_violations["position_not_sum_of_fills"],
        "venue_stream": stream,
        "commands": commands,
        "violation_kinds": {name: n for name, n in violations.items() if n},
        "examples": examples,
        "scale": SCALE,
    }
    write_reliability_record(record)
    assert record["violations"] == 0, record["violation_kinds"]
