"""The `aether ml signals` process: the signal worker and the follower strategy as inbox consumers of their topics,
and the `ml` outbox relay publishing what they queue, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from ml.signals.strategy import FollowerConfig, SignalFollower
from ml.signals.worker import SCHEMA, SignalWorker
from ml.tracking import LoadedModel
from shared.config import AetherSettings
from shared.db import create_engine, sessionmaker_for
from shared.events.consumer import ConsumerLoop, Handler
from shared.events.producer import EventProducer
from shared.events.relay import OutboxRelay
from shared.events.tables import event_tables
from shared.events.topics import ANALYTICS_FEATURE_EVENTS, ML_SIGNALS


async def run_signals(
    settings: AetherSettings,
    model: LoadedModel,
    *,
    horizon_s: int,
    follower: FollowerConfig | None,
    stop: asyncio.Event | None = None,
) -> None:
    """Score features into signals (and, with `follower`, turn signals into orders) until `stop` (default: a signal)."""
    engine = create_engine(settings, application_name="aether-ml-signals")
    sessions = sessionmaker_for(engine)
    tables = event_tables(SCHEMA)
    producer = EventProducer(
        bootstrap=settings.kafka_bootstrap, client_id="aether-ml", security_protocol=settings.kafka_security_protocol
    )
    relay = OutboxRelay(sessions, tables, producer)
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    handlers: list[tuple[str, str, Handler]] = [
        ("ml.signals", ANALYTICS_FEATURE_EVENTS, SignalWorker(tables, model, horizon_s=horizon_s).handle)
    ]
    if follower is not None:
        handlers.append(("ml.follower", ML_SIGNALS, SignalFollower(tables, follower).handle))
    consumers = [
        ConsumerLoop(
            bootstrap=settings.kafka_bootstrap,
            security_protocol=settings.kafka_security_protocol,
            group_id=name,
            topics=[topic],
            sessionmaker=sessions,
            tables=tables,
            handler=handler,
            consumer_name=name,
            dead_letter_producer=producer,
        )
        for name, topic, handler in handlers
    ]
    await producer.start()
    try:
        for consumer in consumers:
            await consumer.start()
        await asyncio.gather(relay.run(stop), *(consumer.run(stop) for consumer in consumers))
    finally:
        for consumer in consumers:
            with contextlib.suppress(Exception):
                await consumer.stop()
        await producer.stop()
        await engine.dispose()
