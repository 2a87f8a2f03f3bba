"""Events kit: envelope, topic names, idempotent producer, outbox + relay, inbox + consumer loop."""

from shared.events.consumer import ConsumerLoop, ConsumerStats, DeadLetterReason, Handler, Outcome
from shared.events.envelope import Envelope, MessageDecodeError, correlation_id_from_headers, header_value
from shared.events.inbox import claim
from shared.events.outbox import OutboxItem, add_many_to_outbox, add_to_outbox
from shared.events.producer import Delivery, EventProducer, OutgoingMessage, ProducerNotStarted
from shared.events.relay import OutboxRelay
from shared.events.tables import EventTables, event_tables

__all__ = [
    "ConsumerLoop",
    "ConsumerStats",
    "DeadLetterReason",
    "Delivery",
    "Envelope",
    "EventProducer",
    "EventTables",
    "Handler",
    "MessageDecodeError",
    "OutboxItem",
    "OutboxRelay",
    "Outcome",
    "OutgoingMessage",
    "ProducerNotStarted",
    "add_many_to_outbox",
    "add_to_outbox",
    "claim",
    "correlation_id_from_headers",
    "event_tables",
    "header_value",
]
