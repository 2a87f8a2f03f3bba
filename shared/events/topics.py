"""Topic names: `<service>.<entity>-events.v<N>` for events, `<service>.commands.v<N>` for commands, `.dlq` suffix."""

from __future__ import annotations

import re

DEAD_LETTER_SUFFIX = ".dlq"
# Kafka's own limit is 249 characters of [A-Za-z0-9._-].
MAX_TOPIC_LENGTH = 249

_SERVICE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_ENTITY = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
# `<service>.<stream>.v<N>`: streams are `<entity>-events`, `commands`, or a named stream such as `decisions`.
_PLATFORM_TOPIC = re.compile(r"[a-z][a-z0-9_]{0,31}\.[a-z][a-z0-9]*(?:-[a-z0-9]+)*\.v[1-9][0-9]*(?:\.dlq)?")
_KAFKA_LEGAL = re.compile(r"[A-Za-z0-9._-]+")


class InvalidTopicName(ValueError):
    """A topic name that breaks the platform's naming rules."""


def _check_version(version: int) -> None:
    if version < 1:
        raise InvalidTopicName(f"topic version must be >= 1, got {version}")


def _check_service(service: str) -> None:
    if _SERVICE.fullmatch(service) is None:
        raise InvalidTopicName(f"invalid service name {service!r}: lower-case letters, digits, underscore")


def entity_events(service: str, entity: str, version: int = 1) -> str:
    """Events of one entity: `<service>.<entity>-events.v<N>` (e.g. `oms.order-events.v1`)."""
    _check_service(service)
    if _ENTITY.fullmatch(entity) is None:
        raise InvalidTopicName(f"invalid entity name {entity!r}: lower-case words joined by '-'")
    _check_version(version)
    return f"{service}.{entity}-events.v{version}"


def commands(service: str, version: int = 1) -> str:
    """Commands addressed to a service: `<service>.commands.v<N>`."""
    _check_service(service)
    _check_version(version)
    return f"{service}.commands.v{version}"


def dead_letter(topic: str) -> str:
    """The dead-letter topic of `topic`: `<topic>.dlq`."""
    validate_kafka_name(topic)
    if topic.endswith(DEAD_LETTER_SUFFIX):
        raise InvalidTopicName(f"{topic!r} is already a dead-letter topic")
    return validate_kafka_name(f"{topic}{DEAD_LETTER_SUFFIX}")


def is_platform_topic(topic: str) -> bool:
    """True when `topic` follows `<service>.<name>.v<N>` (events, commands or a named stream), optionally `.dlq`."""
    return len(topic) <= MAX_TOPIC_LENGTH and _PLATFORM_TOPIC.fullmatch(topic) is not None


def validate_topic(topic: str) -> str:
    """Return `topic` when it follows the platform's naming rules, else raise InvalidTopicName."""
    if not is_platform_topic(topic):
        raise InvalidTopicName(
            f"{topic!r} is not `<service>.<entity>-events.v<N>`, `<service>.commands.v<N>` or similar"
        )
    return topic


def validate_kafka_name(topic: str) -> str:
    """Return `topic` when Kafka accepts it as a name (1-249 chars of [A-Za-z0-9._-], not '.' or '..')."""
    if len(topic) > MAX_TOPIC_LENGTH or topic in {".", ".."} or _KAFKA_LEGAL.fullmatch(topic) is None:
        raise InvalidTopicName(f"{topic!r} is not a legal Kafka topic name")
    return topic


# The topics known today; new ones are built with entity_events()/commands() next to their producer.
OMS_COMMANDS = commands("oms")
OMS_ORDER_EVENTS = entity_events("oms", "order")
OMS_BALANCE_EVENTS = entity_events("oms", "balance")  # BalanceChanged, keyed by account id
OMS_CASHFLOW_EVENTS = entity_events("oms", "cash-flow")  # CashFlowRecorded, keyed by account id
HITL_DECISIONS = validate_topic("hitl.decisions.v1")
AUDIT_ANCHORS = validate_topic("audit.anchors.v1")
# Issue 4 and 5 streams (payloads documented in docs/risk.md, docs/hedge.md, docs/hitl.md).
RISK_TRADING_STATE_EVENTS = entity_events("risk", "trading-state")
RISK_EXIT_EVENTS = entity_events("risk", "exit")
RISK_COMMANDS = commands("risk")
HEDGE_RECOMMENDATION_EVENTS = entity_events("hedge", "recommendation")
HEDGE_TARGET_EVENTS = entity_events("hedge", "target")
HITL_REQUEST_EVENTS = entity_events("hitl", "request")
REPORTS_ALLOCATION_EVENTS = entity_events("reports", "allocation")  # allocator proposals, keyed by proposal id
# Issue 14: market-data anomalies (shared/contracts/analytics.py), keyed by symbol.
ANALYTICS_ANOMALY_EVENTS = entity_events("analytics", "anomaly")
# Issue 14: microstructure features of each closed bar (docs/features.md), keyed by symbol.
ANALYTICS_FEATURE_EVENTS = entity_events("analytics", "feature")
# Issue 16: the champion model's signals (shared/contracts/signals.py, docs/ml.md), keyed by symbol.
ML_SIGNALS = validate_topic("ml.signals.v1")
# Compacted (cleanup.policy=compact): the latest value of every control the OMS enforces, keyed by control
# (shared/contracts/controls.py); created compacted by `ensure_compacted_topic` before anyone writes to them.
RISK_CONTROLS = validate_topic("risk.controls.v1")
HITL_CONTROLS = validate_topic("hitl.controls.v1")
COMPACTED_TOPICS = frozenset({RISK_CONTROLS, HITL_CONTROLS})
