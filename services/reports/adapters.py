"""The reports service's composition root: the read-model writer and the queries, built once per process."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from services.reports.allocation import CapitalAllocator
from services.reports.config import ReportsSettings
from services.reports.service import ReadModelWriter, ReportQueries
from shared.app_factory import ServiceRuntime, adapters_of
from shared.config import ConfigurationError


@dataclass(frozen=True)
class ReportsAdapters:
    settings: ReportsSettings
    writer: ReadModelWriter
    queries: ReportQueries
    allocator: CapitalAllocator


async def build_adapters(runtime: ServiceRuntime) -> None:
    """`ServiceSpec.on_startup`: the writer (it holds the books the marks come from) and the queries."""
    settings = runtime.settings
    if not isinstance(settings, ReportsSettings):
        raise ConfigurationError("the reports service needs ReportsSettings")
    queries = ReportQueries(runtime.sessionmaker, settings.quote_asset, settings.max_range_days)
    allocator = CapitalAllocator(
        runtime.sessionmaker,
        runtime.tables,
        queries,
        settings.allocation_events_topic,
        clock=lambda: datetime.now(UTC),
        on_commit=runtime.relay.wake,
    )
    runtime.adapters = ReportsAdapters(settings, ReadModelWriter(), queries, allocator)


def reports_adapters(runtime: ServiceRuntime) -> ReportsAdapters:
    """The adapters of a started reports process."""
    return adapters_of(runtime, ReportsAdapters)
