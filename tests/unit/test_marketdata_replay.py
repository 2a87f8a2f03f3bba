"""The market-data replay: pacing by message time and speed, records, loop/limit/start-at, stopping, and the
CLI's errors (a fake publisher, no servers)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from typer.testing import CliRunner

from data.replay import cli as replay_cli
from data.replay.cli import app as feed_app
from data.replay.publisher import ReplayReport, ReplayTopics, replay
from data.replay.source import FileSource, SyntheticMarket
from shared.events import Envelope
from shared.events.producer import Delivery, OutgoingMessage
from shared.marketdata import MarketData, Trade, decode_marketdata
from tests.kit.marketdata import HEADER, NOW, SAMPLE, synthetic

# --------------------------------------------------------------------------- replay pacing (fake publisher)


class FakePublisher:
    """Records batches; a BatchPublisher without Kafka."""

    def __init__(self) -> None:
        self.batches: list[list[OutgoingMessage]] = []

    async def publish_batch(self, messages: Sequence[OutgoingMessage]) -> list[Delivery]:
        self.batches.append(list(messages))
        return [Delivery(message.topic, 0, i) for i, message in enumerate(messages)]

    @property
    def records(self) -> list[OutgoingMessage]:
        return [record for batch in self.batches for record in batch]


class FakeTime:
    """A clock that only moves when the replay sleeps."""

    def __init__(self) -> None:
        self.now_s = 1_000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now_s

    async def sleep(self, delay_s: float) -> None:
        self.slept.append(delay_s)
        self.now_s += delay_s


class ListSource:
    def __init__(self, messages: list[MarketData]) -> None:
        self._messages = messages

    def messages(self) -> Any:
        return iter(self._messages)


@pytest.mark.parametrize("speed", [1.0, 4.0])
async def test_replay_paces_by_message_time_divided_by_speed(speed: float) -> None:
    messages = synthetic(seed=1, count=200)
    span_s = (messages[-1].timestamp - messages[0].timestamp).total_seconds()
    fake, publisher = FakeTime(), FakePublisher()
    report = await replay(ListSource(messages), publisher, speed=speed, sleep=fake.sleep, clock=fake.clock)
    assert report.published == len(publisher.records) == 200
    assert report.books + report.trades == 200
    assert report.trades == sum(isinstance(m, Trade) for m in messages)
    assert sum(fake.slept) == pytest.approx(span_s / speed)
    assert report.elapsed_s == pytest.approx(span_s / speed)
    # One batch per distinct timestamp: what is due together goes together.
    assert len(publisher.batches) == len({m.timestamp for m in messages})


async def test_replay_at_speed_zero_never_sleeps_and_batches() -> None:
    fake, publisher = FakeTime(), FakePublisher()
    report = await replay(
        SyntheticMarket(seed=1, start_at=NOW), publisher, speed=0, limit=1_234, sleep=fake.sleep, clock=fake.clock
    )
    assert report.published == 1_234
    assert fake.slept == []
    assert [len(batch) for batch in publisher.batches] == [500, 500, 234]


async def test_replay_records_carry_topic_key_and_one_correlation_id() -> None:
    publisher = FakePublisher()
    topics = ReplayTopics.with_prefix("t-1.")
    messages = synthetic(seed=1, count=50)
    await replay(ListSource(messages), publisher, speed=0, topics=topics)
    envelopes = [Envelope.from_bytes(record.value) for record in publisher.records]
    assert [decode_marketdata(envelope) for envelope in envelopes] == messages
    assert {record.key for record in publisher.records} == {"BTC/USD"}
    assert {envelope.correlation_id for envelope in envelopes} == {envelopes[0].correlation_id}
    assert {envelope.producer for envelope in envelopes} == {"feed-replay"}
    for record, message in zip(publisher.records, messages, strict=True):
        expected = "t-1.marketdata.trade-events.v1" if isinstance(message, Trade) else "t-1.marketdata.book-events.v1"
        assert record.topic == expected
        assert dict(record.headers)["event_type"] == Envelope.from_bytes(record.value).type.encode()


async def test_replay_loop_and_limit_and_start_at() -> None:
    publisher = FakePublisher()
    source = FileSource(SAMPLE)
    report = await replay(source, publisher, speed=0, loop=True, limit=3 * len(source) + 5, start_at=NOW)
    published = [decode_marketdata(Envelope.from_bytes(record.value)) for record in publisher.records]
    assert report.published == len(published) == 3 * len(source) + 5
    assert published[0].timestamp == NOW
    assert [m.timestamp for m in published] == sorted(m.timestamp for m in published)


async def test_stop_event_ends_the_replay_cleanly_even_while_sleeping() -> None:
    stop = asyncio.Event()
    fake, publisher = FakeTime(), FakePublisher()
    progress: list[ReplayReport] = []

    async def sleep_until_signal(delay_s: float) -> None:
        if len(fake.slept) < 10:
            await fake.sleep(delay_s)
            return
        stop.set()  # as the SIGINT/SIGTERM handler does, while the replay waits for the next message
        await asyncio.Event().wait()

    report = await asyncio.wait_for(
        replay(
            SyntheticMarket(seed=1, start_at=NOW),
            publisher,
            speed=1,
            stop=stop,
            sleep=sleep_until_signal,
            clock=fake.clock,
            on_progress=progress.append,
        ),
        timeout=5,
    )
    assert report.stopped
    assert len(publisher.batches) == 11  # the first message, then one batch after each of the 10 sleeps
    assert report.published == len(publisher.records) == progress[-1].published


class OutagePublisher(FakePublisher):
    """Refuses every batch while `down` (as aiokafka does with the broker stopped); records the batches it stored."""

    def __init__(self, failures: int, error: Exception) -> None:
        super().__init__()
        self.failures_left = failures
        self.error = error
        self.attempts = 0

    async def publish_batch(self, messages: Sequence[OutgoingMessage]) -> list[Delivery]:
        self.attempts += 1
        if self.failures_left > 0:
            self.failures_left -= 1
            raise self.error
        return await super().publish_batch(messages)


@pytest.mark.parametrize("error", [KafkaConnectionError("broker down"), TimeoutError("acks missing")])
async def test_replay_rides_out_a_broker_outage_and_loses_nothing(error: Exception) -> None:
    messages = synthetic(seed=3, count=120)
    publisher = OutagePublisher(failures=4, error=error)
    report = await replay(
        ListSource(messages), publisher, speed=0, batch_size=50, retry_backoff_s=0.001, max_backoff_s=0.002
    )
    assert publisher.attempts == 3 + 4
    assert report.published == 120
    assert [decode_marketdata(Envelope.from_bytes(record.value)) for record in publisher.records] == messages


async def test_replay_retries_a_batch_with_the_same_event_ids() -> None:
    class Recording(OutagePublisher):
        def __init__(self) -> None:
            super().__init__(failures=1, error=KafkaConnectionError("broker down"))
            self.offered: list[list[bytes | None]] = []

        async def publish_batch(self, messages: Sequence[OutgoingMessage]) -> list[Delivery]:
            self.offered.append([message.value for message in messages])
            return await super().publish_batch(messages)

    publisher = Recording()
    await replay(ListSource(synthetic(seed=3, count=10)), publisher, speed=0, retry_backoff_s=0.001)
    assert len(publisher.offered) == 2
    assert publisher.offered[0] == publisher.offered[1]


async def test_stop_ends_a_replay_waiting_for_the_broker() -> None:
    stop = asyncio.Event()

    class StopAfterThree(OutagePublisher):
        async def publish_batch(self, messages: Sequence[OutgoingMessage]) -> list[Delivery]:
            if self.attempts == 2:
                stop.set()  # as the SIGINT/SIGTERM handler does, while the broker is still down
            return await super().publish_batch(messages)

    publisher = StopAfterThree(failures=10**9, error=KafkaConnectionError("broker down"))
    report = await asyncio.wait_for(
        replay(ListSource(synthetic(seed=3, count=10)), publisher, speed=0, stop=stop, retry_backoff_s=0.001),
        timeout=5,
    )
    assert report.stopped
    assert report.published == 0
    assert publisher.attempts == 3


async def test_a_non_broker_error_is_not_retried() -> None:
    publisher = OutagePublisher(failures=1, error=ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        await replay(ListSource(synthetic(seed=3, count=10)), publisher, speed=0, retry_backoff_s=0.001)
    assert publisher.attempts == 1


class FlakyStart:
    """An EventProducer whose start() fails while the broker is away."""

    def __init__(self, failures: int) -> None:
        self.failures_left = failures
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        if self.failures_left > 0:
            self.failures_left -= 1
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")


async def test_the_cli_waits_for_kafka_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay_cli, "CONNECT_BACKOFF_S", 0.001)
    producer = FlakyStart(failures=3)
    assert await replay_cli._connect(producer, "127.0.0.1:1", asyncio.Event())  # type: ignore[arg-type]
    assert producer.starts == 4


async def test_the_cli_stops_waiting_for_kafka_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay_cli, "CONNECT_BACKOFF_S", 0.001)
    stop = asyncio.Event()
    stop.set()
    producer = FlakyStart(failures=10**9)
    assert not await asyncio.wait_for(replay_cli._connect(producer, "127.0.0.1:1", stop), timeout=5)  # type: ignore[arg-type]


async def test_replay_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="speed"):
        await replay(ListSource([]), FakePublisher(), speed=-1)
    with pytest.raises(ValueError, match="limit"):
        await replay(ListSource([]), FakePublisher(), limit=-1)


# --------------------------------------------------------------------------- CLI errors (before any Kafka call)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["replay"], "give exactly one of --file PATH or --synthetic"),
        (["replay", "--synthetic", "--file", "x.csv"], "give exactly one of --file PATH or --synthetic"),
        (["replay", "--synthetic", "--start-price", "abc"], "--start-price: not a decimal number"),
        (["replay", "--synthetic", "--start-price", "-5"], "start_price must be positive"),
        (["replay", "--synthetic", "--symbol", "btc"], "symbol: String should match pattern"),
        (["replay", "--file", "/nonexistent/feed.csv"], "/nonexistent/feed.csv: cannot read"),
    ],
)
def test_cli_reports_bad_input_in_one_line(args: list[str], expected: str) -> None:
    result = CliRunner().invoke(feed_app, [*args, "--bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 2
    assert expected in result.output
    assert "Traceback" not in result.output


def test_cli_names_the_bad_line_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        HEADER + "2026-01-01T00:00:00Z,trade,BTC/USD,buy,100,1,t1\n2026-01-01T00:00:01Z,trade,BTC/USD,buy,1.2.3,1,t2\n"
    )
    result = CliRunner().invoke(feed_app, ["replay", "--file", str(path), "--bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 2
    assert f"{path}: line 3: price" in result.output
