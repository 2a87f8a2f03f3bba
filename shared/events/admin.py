"""Topic administration the platform needs at start: compacted topics exist, compacted.

The broker auto-creates ordinary topics on first use, but an auto-created topic would be `cleanup.policy=delete`:
a controls topic created that way would lose old keys after the retention period. So the owner of a compacted
topic creates it compacted at start (`ops/stack` does the same for the local stack), and a topic that a first
publish created with the delete policy is altered to compacted (logged).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from shared.events.topics import validate_kafka_name
from shared.observability.logging import get_logger

log = get_logger(__name__)

COMPACT = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "3600000"}


class TopicMisconfigured(RuntimeError):
    """A topic that must be compacted exists with another cleanup policy."""


async def ensure_compacted_topic(bootstrap: str, topic: str, *, partitions: int = 1) -> None:
    """Create `topic` compacted, or check that the existing topic is; TopicMisconfigured when it is not."""
    validate_kafka_name(topic)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="aether-topic-admin")
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1, topic_configs=COMPACT)]
        )
        codes = [entry[1] for entry in response.topic_errors if entry[0] == topic]
        if codes == [0]:
            log.info("compacted_topic_created", topic=topic, partitions=partitions)
            return
        if codes != [TopicAlreadyExistsError.errno]:
            raise TopicMisconfigured(f"creating {topic} failed with Kafka error codes {codes}")
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        policy = _cleanup_policy(described, topic)
        if policy is None or "compact" not in policy.split(","):
            # Auto-created by a first publish (the broker's default policy is delete): make it compacted now.
            log.warning("compacted_topic_altered", topic=topic, cleanup_policy=policy)
            altered = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=COMPACT)])
            codes = [resource[0] for response in altered for resource in getattr(response, "resources", [])]
            if any(codes):
                raise TopicMisconfigured(f"{topic} has cleanup.policy={policy!r} and altering it failed: {codes}")
    finally:
        await admin.close()


async def topic_partitions(
    bootstrap: str, topics: Sequence[str], security_protocol: str = "PLAINTEXT"
) -> list[TopicPartition]:
    """Every partition of the `topics` that exist (a topic not created yet has none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, security_protocol=security_protocol)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    return [
        TopicPartition(entry["topic"], partition["partition"])
        for entry in described
        if entry["error_code"] == 0
        for partition in sorted(entry["partitions"], key=lambda p: p["partition"])
    ]


def _cleanup_policy(responses: object, topic: str) -> str | None:
    """The `cleanup.policy` value in a DescribeConfigs response (aiokafka returns protocol structs)."""
    for response in responses if isinstance(responses, list) else [responses]:
        for resource in getattr(response, "resources", []):
            # (error_code, error_message, resource_type, resource_name, config_entries)
            if resource[3] != topic:
                continue
            for entry in resource[4]:
                if entry[0] == "cleanup.policy":
                    return str(entry[1])
    return None
