"""The local stack: PostgreSQL, Redis and Apache Kafka started from local binaries, no containers.

- PostgreSQL (``postgres.py``): the newest server under ``/usr/lib/postgresql/*/bin``, on 127.0.0.1:54329 and a
  unix socket under the stack home.
- Redis (``redis.py``): ``redis-server`` from PATH, on 127.0.0.1:63799, no persistence.
- Apache Kafka 4.1.1 (``kafka.py``): a single KRaft node from jars that Maven fetches once, on 127.0.0.1:19092.

Everything lives under ``AETHER_HOME`` (default ``<repo>/.aether``). Every step is idempotent: a
component whose process is alive and answering is left alone. ``down`` stops exactly the
processes the pidfiles name. Failures raise :class:`StackError`, whose message is one line.
``common.py`` holds what the three share, ``orchestration.py`` drives them together.
"""

from ops.stack.common import (
    COMPONENTS,
    HOST,
    KAFKA_BOOTSTRAP,
    KAFKA_CONTROLLER_PORT,
    KAFKA_PORT,
    PG_PORT,
    REDIS_PORT,
    REPO_ROOT,
    Component,
    ComponentStatus,
    StackError,
    StackPaths,
    console,
    stack_paths,
)
from ops.stack.kafka import KAFKA_HEALTHCHECK_TOPIC, kafka_version
from ops.stack.orchestration import (
    browser_binaries,
    down,
    env_text,
    stack_env,
    start,
    start_kafka,
    start_postgres,
    start_redis,
    status,
    stop,
    stop_kafka,
    stop_postgres,
    stop_redis,
    up,
)
from ops.stack.postgres import APP_DATABASE, APP_PASSWORD, APP_ROLE, pg_bin_dir

__all__ = [
    "APP_DATABASE",
    "APP_PASSWORD",
    "APP_ROLE",
    "COMPONENTS",
    "HOST",
    "KAFKA_BOOTSTRAP",
    "KAFKA_CONTROLLER_PORT",
    "KAFKA_HEALTHCHECK_TOPIC",
    "KAFKA_PORT",
    "PG_PORT",
    "REDIS_PORT",
    "REPO_ROOT",
    "Component",
    "ComponentStatus",
    "StackError",
    "StackPaths",
    "browser_binaries",
    "console",
    "down",
    "env_text",
    "kafka_version",
    "pg_bin_dir",
    "stack_env",
    "stack_paths",
    "start",
    "start_kafka",
    "start_postgres",
    "start_redis",
    "status",
    "stop",
    "stop_kafka",
    "stop_postgres",
    "stop_redis",
    "up",
]
