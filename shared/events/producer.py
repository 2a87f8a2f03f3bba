"""Idempotent Kafka producer (acks=all): every send awaits the broker's acknowledgement."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.events.envelope import Envelope

# What a publish raises while the broker is down or unreachable: retry later, the records are not lost.
BROKER_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (KafkaError, TimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One record to publish: raw value bytes (an envelope's to_bytes(), or a dead letter's original value)."""

    topic: str
    key: str | bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where the broker stored an acknowledged record."""

    topic: str
    partition: int
    offset: int


class ProducerNotStarted(RuntimeError):
    """send() was called before start() (or after stop())."""


class EventProducer:
    """AIOKafkaProducer with acks=all and idempotence: retries never duplicate or reorder within a partition."""

    def __init__(
        self,
        bootstrap: str,
        client_id: str,
        security_protocol: str = "PLAINTEXT",
        *,
        ssl_context: ssl.SSLContext | None = None,
        linger_ms: int = 5,
        request_timeout_ms: int = 15_000,
    ) -> None:
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "security_protocol": security_protocol,
            "ssl_context": ssl_context,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": linger_ms,
            "request_timeout_ms": request_timeout_ms,
        }
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        """Connect to the cluster; a no-op when already started, retryable after a failure."""
        async with self._lock:
            if self._producer is not None:
                return
            producer = AIOKafkaProducer(**self._options)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer

    async def stop(self) -> None:
        """Flush pending records and disconnect."""
        async with self._lock:
            producer, self._producer = self._producer, None
            if producer is not None:
                await producer.stop()

    async def send(self, topic: str, envelope: Envelope, key: str | None = None) -> Delivery:
        """Publish one envelope (key defaults to its aggregate id) and wait for the broker's ack."""
        message = OutgoingMessage(
            topic=topic,
            key=key if key is not None else envelope.aggregate_id,
            value=envelope.to_bytes(),
            headers=tuple(envelope.kafka_headers()),
        )
        return (await self.publish_batch([message]))[0]

    async def send_raw(self, message: OutgoingMessage) -> Delivery:
        """Publish one raw record (e.g. a dead letter) and wait for the broker's ack."""
        return (await self.publish_batch([message]))[0]

    async def publish_batch(self, messages: Sequence[OutgoingMessage], *, timeout_s: float = 30.0) -> list[Delivery]:
        """Publish records concurrently, keeping their order per partition, and wait for every ack.

        Raises the first delivery error, or TimeoutError when acks are still missing after `timeout_s`;
        either way some records may already be on the broker (at-least-once).
        """
        producer = self._producer
        if producer is None:
            raise ProducerNotStarted("EventProducer.start() has not been called")
        futures: list[asyncio.Future[Any]] = []
        try:
            # Enqueue one after another: the accumulator keeps enqueue order per partition.
            for message in messages:
                futures.append(await producer.send(message.topic, **_record(message)))
        except BaseException:
            for future in futures:
                future.add_done_callback(_consume_outcome)
            raise
        if not futures:
            return []
        done, pending = await asyncio.wait(futures, timeout=timeout_s)
        for future in pending:
            # Cancelling would not recall the record; just keep its late outcome from being reported as unretrieved.
            future.add_done_callback(_consume_outcome)
        errors = [error for future in futures if future in done and (error := future.exception()) is not None]
        if errors:
            raise errors[0]
        if pending:
            raise TimeoutError(f"{len(pending)} of {len(futures)} records not acknowledged within {timeout_s:g}s")
        return [_delivery(future.result()) for future in futures]


def _record(message: OutgoingMessage) -> dict[str, Any]:
    return {
        "value": message.value,
        "key": message.key.encode() if isinstance(message.key, str) else message.key,
        "headers": list(message.headers),
    }


def _delivery(metadata: Any) -> Delivery:
    return Delivery(topic=str(metadata.topic), partition=int(metadata.partition), offset=int(metadata.offset))


def _consume_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


__all__ = ["BROKER_UNAVAILABLE_ERRORS", "Delivery", "EventProducer", "OutgoingMessage", "ProducerNotStarted"]
