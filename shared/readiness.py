"""Readiness probes for the backends every service needs: PostgreSQL, Redis and Kafka.

A backend that is down makes `/readyz` answer 503 with the reason; nothing switches to a substitute.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka.client import AIOKafkaClient
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.observability.logging import get_logger

log = get_logger(__name__)

Probe = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    reason: str | None = None


class DependencyCheck:
    """A named probe; remembers its last state so a failure is logged once per outage, not per poll."""

    def __init__(self, name: str, probe: Probe) -> None:
        self.name = name
        self._probe = probe
        self._was_ok: bool | None = None

    async def run(self, timeout_s: float) -> CheckResult:
        try:
            await asyncio.wait_for(self._probe(), timeout=timeout_s)
        except TimeoutError:
            result = CheckResult(self.name, ok=False, reason=f"{self.name}: no answer within {timeout_s:g}s")
        except Exception as exc:
            result = CheckResult(self.name, ok=False, reason=f"{self.name}: {type(exc).__name__}: {exc}"[:300])
        else:
            result = CheckResult(self.name, ok=True)
        self._log_transition(result)
        return result

    def _log_transition(self, result: CheckResult) -> None:
        if result.ok and self._was_ok is False:
            log.info("dependency_recovered", dependency=self.name)
        elif not result.ok and self._was_ok is not False:
            log.error("dependency_unavailable", dependency=self.name, reason=result.reason)
        self._was_ok = result.ok


async def run_checks(checks: Sequence[DependencyCheck], timeout_s: float) -> list[CheckResult]:
    return list(await asyncio.gather(*(check.run(timeout_s) for check in checks)))


def postgres_check(engine: AsyncEngine) -> DependencyCheck:
    async def probe() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    return DependencyCheck("postgresql", probe)


def redis_check(client: Redis) -> DependencyCheck:
    async def probe() -> None:
        if not await client.ping():
            raise ConnectionError("PING was not answered with PONG")

    return DependencyCheck("redis", probe)


class KafkaProbe:
    """Asks the cluster for metadata through one long-lived client that reconnects by itself."""

    def __init__(self, bootstrap: str, security_protocol: str = "PLAINTEXT") -> None:
        self._bootstrap = bootstrap
        self._security_protocol = security_protocol
        self._client: AIOKafkaClient | None = None

    async def __call__(self) -> None:
        if self._client is None:
            client = AIOKafkaClient(
                bootstrap_servers=self._bootstrap,
                security_protocol=self._security_protocol,
                client_id="aether-readiness",
                request_timeout_ms=3_000,
                metadata_max_age_ms=5_000,
            )
            try:
                await client.bootstrap()
            except BaseException:
                await client.close()
                raise
            self._client = client
        brokers = await self._live_brokers(self._client)
        if brokers == 0:
            raise ConnectionError(f"no Kafka broker reachable at {self._bootstrap}")

    @staticmethod
    async def _live_brokers(client: AIOKafkaClient) -> int:
        metadata = await client.fetch_all_metadata()
        return len(metadata.brokers())

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def kafka_check(probe: KafkaProbe) -> DependencyCheck:
    return DependencyCheck("kafka", probe)
