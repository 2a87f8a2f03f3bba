"""Envelope serialization, immutability and headers; topic naming rules."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

from shared.events import topics
from shared.events.envelope import (
    HEADER_CORRELATION_ID,
    HEADER_EVENT_ID,
    HEADER_EVENT_TYPE,
    Envelope,
    MessageDecodeError,
    correlation_id_from_headers,
    header_value,
)
from shared.observability.correlation import correlation_scope

NOW = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)


def _filled(**overrides: object) -> Envelope:
    fields: dict[str, object] = {
        "type": "OrderFilled",
        "producer": "oms",
        "aggregate_id": "order-42",
        "payload": {"qty": str(Decimal("0.015")), "price": "64000.10", "venue": "kraken", "legs": [1, 2]},
        "now": NOW,
        "correlation_id": "corr-1",
    }
    fields.update(overrides)
    return Envelope.new(**fields)  # type: ignore[arg-type]


def test_round_trip_through_bytes_is_lossless() -> None:
    envelope = _filled(causation_id="cmd-7")
    decoded = Envelope.from_bytes(envelope.to_bytes())
    assert decoded == envelope
    assert Decimal(str(decoded.payload["qty"])) == Decimal("0.015")
    assert decoded.occurred_at == NOW
    assert decoded.causation_id == "cmd-7"


def test_new_fills_identity_and_defaults() -> None:
    first, second = _filled(), _filled()
    assert first.event_id != second.event_id
    assert first.schema_version == 1
    assert first.causation_id is None


def test_envelope_is_frozen() -> None:
    envelope = _filled()
    with pytest.raises(ValidationError):
        envelope.type = "OrderCanceled"  # type: ignore[misc]


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(ValidationError):
        _filled(now=datetime(2025, 3, 1, 12, 30))  # noqa: DTZ001 - the naive datetime is the point of the test


def test_occurred_at_is_normalized_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    envelope = _filled(now=datetime(2025, 3, 1, 13, 30, tzinfo=paris))
    assert envelope.occurred_at.utcoffset() == timedelta(0)
    assert envelope.occurred_at == NOW


def test_extra_fields_are_rejected() -> None:
    raw = json.loads(_filled().to_bytes())
    raw["unexpected"] = 1
    with pytest.raises(MessageDecodeError):
        Envelope.from_bytes(json.dumps(raw).encode())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("schema_version", 0),
        ("type", "order_filled"),
        ("producer", "OMS"),
        ("correlation_id", "a b"),
        ("aggregate_id", ""),
    ],
)
def test_invalid_fields_are_rejected(field: str, value: object) -> None:
    raw = json.loads(_filled().to_bytes())
    raw[field] = value
    with pytest.raises(MessageDecodeError):
        Envelope.from_bytes(json.dumps(raw).encode())


@pytest.mark.parametrize("data", [None, b"", b"not json", b"[1, 2]", b'{"event_id": "x"}', b"\xff\xfe"])
def test_garbage_raises_decode_error(data: bytes | None) -> None:
    with pytest.raises(MessageDecodeError):
        Envelope.from_bytes(data)


def test_headers_carry_correlation_type_and_id() -> None:
    envelope = _filled()
    headers = envelope.kafka_headers()
    assert header_value(headers, HEADER_CORRELATION_ID) == "corr-1"
    assert header_value(headers, HEADER_EVENT_TYPE) == "OrderFilled"
    assert header_value(headers, HEADER_EVENT_ID) == str(envelope.event_id)
    assert correlation_id_from_headers(headers) == "corr-1"
    assert all(isinstance(value, bytes) for _, value in headers)


def test_malformed_correlation_header_is_ignored() -> None:
    assert correlation_id_from_headers([(HEADER_CORRELATION_ID, b"evil\r\nX-Injected: 1")]) is None
    assert correlation_id_from_headers([(HEADER_CORRELATION_ID, b"\xff")]) is None
    assert correlation_id_from_headers(None) is None


def test_correlation_id_comes_from_the_context() -> None:
    with correlation_scope("request-abc"):
        envelope = _filled(correlation_id=None)
    assert envelope.correlation_id == "request-abc"
    fresh = _filled(correlation_id=None)
    assert fresh.correlation_id not in {"request-abc", ""}


def test_follow_up_keeps_correlation_and_points_to_its_cause() -> None:
    cause = _filled()
    effect = cause.follow_up(type="PositionChanged", producer="accounts", aggregate_id="acct-1", payload={}, now=NOW)
    assert effect.correlation_id == cause.correlation_id
    assert effect.causation_id == str(cause.event_id)
    assert effect.event_id != cause.event_id


def test_explicit_event_id_is_kept() -> None:
    event_id = uuid.uuid4()
    assert _filled(event_id=event_id).event_id == event_id


def test_topic_names_follow_the_architecture() -> None:
    assert topics.entity_events("oms", "order") == "oms.order-events.v1"
    assert topics.entity_events("risk", "trading-state", version=2) == "risk.trading-state-events.v2"
    assert topics.commands("oms") == "oms.commands.v1" == topics.OMS_COMMANDS
    assert topics.OMS_ORDER_EVENTS == "oms.order-events.v1"
    assert topics.dead_letter("oms.commands.v1") == "oms.commands.v1.dlq"
    for name in (topics.HITL_DECISIONS, topics.AUDIT_ANCHORS, "oms.commands.v1.dlq"):
        assert topics.is_platform_topic(name)


@pytest.mark.parametrize(
    "call",
    [
        lambda: topics.entity_events("OMS", "order"),
        lambda: topics.entity_events("oms", "Order"),
        lambda: topics.entity_events("oms", "order--x"),
        lambda: topics.commands("oms", version=0),
        lambda: topics.dead_letter("oms.commands.v1.dlq"),
        lambda: topics.dead_letter("bad topic"),
        lambda: topics.validate_topic("oms.orders"),
    ],
)
def test_bad_topic_names_are_refused(call: object) -> None:
    with pytest.raises(topics.InvalidTopicName):
        call()  # type: ignore[operator]
