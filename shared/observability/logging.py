"""JSON logs through structlog, with stdlib logging (uvicorn, sqlalchemy, aiokafka) routed through the same chain.

Run uvicorn with `log_config=None` so it keeps the handlers installed here instead of its own.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from functools import lru_cache
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

from shared.observability.correlation import get_correlation_id
from shared.observability.tracing import add_trace_context

REDACTED = "[REDACTED]"
# A key is secret when its lower-cased, dash-to-underscore form contains one of these.
SECRET_KEY_MARKERS = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "private_key",
    "credential",
    "cookie",
)
# Libraries that install their own handlers or stop propagation; their records must reach the root JSON handler.
ROUTED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "sqlalchemy", "aiokafka")

_service_name: list[str] = ["unknown"]
_handler: list[logging.Handler] = []


def add_service(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Structlog processor: add the service name given to configure_logging."""
    event_dict.setdefault("service", _service_name[0])
    return event_dict


def add_correlation_id(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Structlog processor: add the correlation id of the current context (null outside any request or message)."""
    event_dict.setdefault("correlation_id", get_correlation_id())
    return event_dict


@lru_cache(maxsize=4_096)
def is_secret_key(key: str) -> bool:
    """Return True when a log key looks like it holds a secret."""
    normalized = key.lower().replace("-", "_")
    return any(marker in normalized for marker in SECRET_KEY_MARKERS)


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: REDACTED if isinstance(k, str) and is_secret_key(k) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(item) for item in value]
    return value


def redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Structlog processor: replace values of secret-looking keys (nested dicts and lists too) by "[REDACTED]"."""
    for key, value in list(event_dict.items()):
        if is_secret_key(key):
            event_dict[key] = REDACTED
        elif isinstance(value, Mapping | list | tuple):
            event_dict[key] = _redact(value)
    return event_dict


def _head_processors() -> list[Processor]:
    # Runs for structlog events and, via foreign_pre_chain, for stdlib records.
    return [
        structlog.contextvars.merge_contextvars,
        add_correlation_id,
        add_trace_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_service,
    ]


def _tail_processors() -> list[Processor]:
    return [structlog.processors.StackInfoRenderer(), structlog.processors.format_exc_info, redact_secrets]


def _drop_terminal_copies(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # uvicorn adds an ANSI-coloured duplicate of each message for terminals; JSON lines don't need it.
    event_dict.pop("color_message", None)
    return event_dict


def configure_logging(
    service: str, level: str = "INFO", json_logs: bool = True, *, stream: TextIO | None = None
) -> None:
    """Send structlog and stdlib logs as one JSON line each to `stream` (stdout); safe to call again."""
    numeric_level = logging.getLevelNamesMapping().get(level.upper())
    if numeric_level is None:
        raise ValueError(f"unknown log level {level!r}")
    _service_name[0] = service
    renderer: Processor = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *_head_processors(),
            structlog.stdlib.ExtraAdder(),
            _drop_terminal_copies,
            *_tail_processors(),
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for previous in _handler:
        root.removeHandler(previous)
    _handler[:] = [handler]
    root.addHandler(handler)
    root.setLevel(numeric_level)
    for name in ROUTED_LOGGERS:
        routed = logging.getLogger(name)
        routed.handlers.clear()
        routed.propagate = True

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_head_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            *_tail_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # No caching: a module-level logger used before configure_logging would keep the default (non-JSON) chain.
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """Return a structlog logger named `name` (use __name__)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
