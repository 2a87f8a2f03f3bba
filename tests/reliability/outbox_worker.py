"""Helper process for R3: one outbox relay, run until SIGKILL (or SIGTERM for a clean stop).

Usage: AETHER_DATABASE_URL=... python -m tests.reliability.outbox_worker --bootstrap HOST:PORT --schema evt_xxx
Prints `ready` on stdout once connected to PostgreSQL and Kafka, then relays until stopped.
`--ack-to-mark-delay-ms` injects latency between the broker's acks and the `sent_at` update (as a slow
database would), widening the window in which a kill leaves published rows unmarked.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import create_async_engine

from shared.events.producer import Delivery, EventProducer, OutgoingMessage
from shared.events.relay import OutboxRelay
from shared.events.tables import EventTables


class SlowMarkProducer(EventProducer):
    """The real producer, followed by a pause once every ack is in (before the relay marks the rows sent)."""

    def __init__(self, bootstrap: str, client_id: str, delay_s: float) -> None:
        super().__init__(bootstrap, client_id)
        self.delay_s = delay_s

    async def publish_batch(self, messages: Sequence[OutgoingMessage], *, timeout_s: float = 30.0) -> list[Delivery]:
        deliveries = await super().publish_batch(messages, timeout_s=timeout_s)
        await asyncio.sleep(self.delay_s)
        return deliveries


async def relay_until_stopped(
    database_url: str, bootstrap: str, schema: str, batch_size: int, ack_to_mark_delay_s: float
) -> None:
    engine = create_async_engine(database_url, pool_size=2)
    producer = SlowMarkProducer(bootstrap, f"r3-relay-{os.getpid()}", ack_to_mark_delay_s)
    await producer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    relay = OutboxRelay(engine, EventTables(schema), producer, batch_size=batch_size, idle_interval_s=0.01)
    await relay.relay_lag()  # connects to PostgreSQL before announcing readiness
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        await relay.run(stop)
    finally:
        await producer.stop()
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--ack-to-mark-delay-ms", type=int, default=0)
    args = parser.parse_args()
    database_url = os.environ["AETHER_DATABASE_URL"]
    delay_s = args.ack_to_mark_delay_ms / 1_000
    asyncio.run(relay_until_stopped(database_url, args.bootstrap, args.schema, args.batch_size, delay_s))


if __name__ == "__main__":
    main()
