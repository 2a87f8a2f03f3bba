"""The backtest service's composition root: the worker pool and the use cases, built once per process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from services.backtest.config import BacktestSettings
from services.backtest.service import BacktestRuns
from services.backtest.worker import Dispatcher
from shared.app_factory import ServiceRuntime, adapters_of
from shared.config import ConfigurationError


@dataclass(frozen=True)
class BacktestAdapters:
    settings: BacktestSettings
    runs: BacktestRuns


async def build_adapters(runtime: ServiceRuntime) -> None:
    """`ServiceSpec.on_startup`: the worker pool (closed with the process) and the runs it left unfinished."""
    settings = runtime.settings
    if not isinstance(settings, BacktestSettings):
        raise ConfigurationError("the backtest service needs BacktestSettings")
    dispatcher = Dispatcher(
        settings.backtest_workers, settings.database_url.get_secret_value(), settings.backtest_data_dir
    )

    async def close() -> None:
        dispatcher.close()

    runtime.closers.append(close)
    runs = BacktestRuns(runtime.sessionmaker, dispatcher, settings.backtest_data_dir, settings.backtest_max_sweep_runs)
    runtime.adapters = BacktestAdapters(settings, runs)
    await runs.recover()


def backtest_adapters(runtime: ServiceRuntime) -> BacktestAdapters:
    """The adapters of a started backtest process."""
    return adapters_of(runtime, BacktestAdapters)


def _from_request(request: Request) -> BacktestAdapters:
    return backtest_adapters(request.app.state.runtime)


Adapters = Annotated[BacktestAdapters, Depends(_from_request)]
