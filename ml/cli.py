"""`aether ml`: hyperparameter search, retraining, the signal worker and the MLflow UI (docs/ml.md)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ml.datasets import Dataset, DatasetSpec
from shared.config import ConfigurationError, load_settings

if TYPE_CHECKING:  # MLflow and Optuna are imported by the commands that use them (the `ml` extra)
    from ml.backtest_metric import FoldBacktest
    from ml.tracking import MLSettings, Tracker
    from ml.trainers.base import Trainer
    from shared.backtest.bars import Bar
    from shared.config import AetherSettings

console = Console(stderr=True)
app = typer.Typer(help="Models: search, retraining, signals, MLflow UI", no_args_is_help=True)

TrainerOpt = Annotated[str, typer.Option(help="trainer name: lightgbm, xgboost, torch")]
VenueOpt = Annotated[str, typer.Option(help="venue of the training data")]
SymbolOpt = Annotated[str, typer.Option(help="symbol of the training data, e.g. BTC/USD")]
StartOpt = Annotated[datetime, typer.Option(help="first bar (UTC, ISO 8601)")]
EndOpt = Annotated[datetime, typer.Option(help="end of the range (UTC, ISO 8601, exclusive)")]
FeaturesOpt = Annotated[str, typer.Option(help="comma-separated feature names (docs/features.md)")]
LabelOpt = Annotated[str, typer.Option(help='labelling method and parameters as JSON, e.g. {"method": "forward"}')]


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _settings() -> MLSettings:
    from ml.tracking import MLSettings

    try:
        return load_settings(MLSettings)
    except ConfigurationError as exc:
        raise _fail(str(exc)) from None


def _trainer(name: str) -> type[Trainer]:
    from ml.tracking import TrackingError, platform_trainers

    try:
        return platform_trainers(name)
    except (KeyError, ValueError, TrackingError) as exc:
        raise _fail(f"--trainer: {exc}") from None


def _spec(venue: str, symbol: str, start: datetime, end: datetime, features: str, label: str) -> DatasetSpec:
    names = tuple(name.strip() for name in features.split(",") if name.strip())
    if not names:
        raise _fail("--features: name at least one feature")
    try:
        label_params = json.loads(label)
    except json.JSONDecodeError as exc:
        raise _fail(f"--label: not JSON ({exc.msg})") from None
    if not isinstance(label_params, dict):
        raise _fail("--label: a JSON object is expected")
    return DatasetSpec(venue, symbol, start, end, names, label_params)


def _dataset(settings: MLSettings, spec: DatasetSpec) -> Dataset:
    """The dataset of `spec`, built from the platform's market-data store (`ml.datasets.build`)."""
    from ml.datasets.build import build
    from shared.db import UnitOfWork, create_engine, sessionmaker_for

    async def built() -> Dataset:
        engine = create_engine(settings, application_name="aether-ml")
        try:
            async with UnitOfWork(sessionmaker_for(engine)) as uow:
                return await build(uow.session, spec)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(built())
    except ValueError as exc:
        raise _fail(f"dataset: {exc}") from None


def _positive_decimal(option: str, text: str) -> Decimal:
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise _fail(f"{option}: {text!r} is not a decimal number") from None
    if not amount.is_finite() or amount <= 0:
        raise _fail(f"{option}: must be a positive decimal")
    return amount


def _fold_backtest(
    venue: str,
    symbol: str,
    window: tuple[datetime, datetime],
    bars_file: Path | None,
    quantity: str,
    quote: str,
) -> FoldBacktest:
    """The after-fee PnL backtest of the fold: candles of the dataset's bars (from `bars_file`, else the market
    data store's 1-minute candles over `window`), the venue's instrument rules and fees."""
    from data.features.definitions import BAR_SECONDS
    from ml.backtest_metric import FoldBacktest, SignalBacktest
    from shared.backtest.bars import BacktestInputError, read_bars
    from shared.venues.instruments import UnknownInstrument, venue_precision

    option = "--bars-file" if bars_file is not None else "--bars-from-store"
    amount = _positive_decimal("--backtest-quantity", quantity)
    initial = _positive_decimal("--backtest-quote", quote)
    try:
        spec = venue_precision(venue).spec(symbol)
    except UnknownInstrument as exc:
        raise _fail(f"{option}: no instrument rules for {exc} on {venue}") from None
    interval = timedelta(seconds=BAR_SECONDS)
    try:
        if bars_file is not None:
            bars = [bar for bar in read_bars(bars_file, interval) if bar.symbol == symbol]
        else:
            bars = asyncio.run(_stored_bars(_settings(), venue, symbol, window))
    except (OSError, BacktestInputError) as exc:
        raise _fail(f"{option}: {exc}") from None
    if not bars:
        raise _fail(f"{option}: no {symbol} bars in {bars_file or 'the store'}")
    return FoldBacktest(bars, SignalBacktest(spec, interval, amount, initial))


async def _stored_bars(
    settings: AetherSettings, venue: str, symbol: str, window: tuple[datetime, datetime]
) -> list[Bar]:
    """The store's 1-minute candles of `symbol` over `window` (an empty or gapped range is an error naming it)."""
    from data.replay.store_reader import StoreRange, read_store

    rng = StoreRange(venue, (symbol,), *window)
    (bars,) = await read_store(settings, rng, "1m", application_name="aether-ml-retrain")
    return bars


def _tracker(settings: MLSettings) -> Tracker:
    from ml.tracking import Tracker, ensure_tracking_database

    url = settings.tracking_url()
    if settings.ml_tracking_url is None:
        ensure_tracking_database(settings.database_url.get_secret_value(), url)
    return Tracker(url, settings.ml_artifact_root, settings.ml_experiment)


@app.command()
def hpo(
    trainer: TrainerOpt,
    venue: VenueOpt,
    symbol: SymbolOpt,
    start: StartOpt,
    end: EndOpt,
    features: FeaturesOpt,
    label: LabelOpt = '{"method": "forward"}',
    study: Annotated[str, typer.Option(help="study name (workers on the same name share it)")] = "aether",
    trials: Annotated[int, typer.Option(min=1, help="finished trials the study should hold")] = 50,
    folds: Annotated[int, typer.Option(min=1, max=20, help="purged walk-forward folds")] = 3,
) -> None:
    """Work on a shared Optuna study (run it in as many processes as you like; a killed one can be restarted)."""
    from ml.search import FINISHED, OPTUNA_DATABASE, SearchError, check_search_space, run_search, storage
    from ml.tracking import ensure_tracking_database, tracking_url_for

    spec = _spec(venue, symbol, start, end, features, label)
    settings = _settings()
    trainer_cls = _trainer(trainer)
    try:
        check_search_space(trainer_cls)
    except SearchError as exc:
        raise _fail(str(exc)) from None
    dataset = _dataset(settings, spec)
    url = tracking_url_for(settings.database_url.get_secret_value(), OPTUNA_DATABASE)
    ensure_tracking_database(settings.database_url.get_secret_value(), url)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"study {study}", total=trials)

        def advanced(study_: Any, _trial: Any) -> None:
            progress.update(task, completed=min(trials, len(study_.get_trials(deepcopy=False, states=FINISHED))))

        try:
            result = run_search(
                storage(url), study, trainer_cls, dataset, n_trials=trials, n_folds=folds, on_trial=advanced
            )
        except SearchError as exc:
            raise _fail(str(exc)) from None
    console.print(f"study {study}: {result.finished} trials finished; best {result.best_value} {result.best_params}")


@app.command()
def retrain(
    trainer: TrainerOpt,
    venue: VenueOpt,
    symbol: SymbolOpt,
    start: StartOpt,
    end: EndOpt,
    features: FeaturesOpt,
    label: LabelOpt = '{"method": "forward"}',
    params: Annotated[str, typer.Option(help="trainer parameters as JSON (e.g. a study's best)")] = "{}",
    model: Annotated[str | None, typer.Option(help="registered model name (default AETHER_ML_MODEL_NAME)")] = None,
    min_log_loss_gain: Annotated[
        float, typer.Option(min=0, help="promote only if log loss improves this much")
    ] = 0.002,
    max_auc_drop: Annotated[float, typer.Option(min=0, help="and AUC drops no more than this")] = 0.0,
    bars_file: Annotated[
        Path | None, typer.Option(help="candles of the range (CSV, docs/backtest.md): log the fold's after-fee PnL")
    ] = None,
    bars_from_store: Annotated[
        bool, typer.Option(help="the same from the market data store's 1-minute candles of the range")
    ] = False,
    backtest_quantity: Annotated[str, typer.Option(help="order size of the fold backtest (decimal)")] = "0.001",
    backtest_quote: Annotated[str, typer.Option(help="starting quote balance of the fold backtest")] = "100000",
) -> None:
    """Train a challenger on new data; promote it to champion only if it beats the champion (audited)."""
    from ml.backtest_metric import SignalBacktestError
    from ml.retrain import PromotionRule
    from ml.retrain import retrain as run_retrain
    from ml.search import SearchError
    from ml.tracking import TrackingError, platform_trainers
    from shared.db import create_engine, sessionmaker_for

    try:
        trainer_params = json.loads(params)
    except json.JSONDecodeError as exc:
        raise _fail(f"--params: not JSON ({exc.msg})") from None
    if not isinstance(trainer_params, dict):
        raise _fail("--params: a JSON object is expected")
    spec = _spec(venue, symbol, start, end, features, label)
    if bars_file is not None and bars_from_store:
        raise _fail("--bars-file and --bars-from-store: give one source of candles")
    backtest = None
    if bars_file is not None or bars_from_store:
        window = (spec.start, spec.end)
        backtest = _fold_backtest(venue, symbol, window, bars_file, backtest_quantity, backtest_quote)
    settings = _settings()
    trainer_cls = _trainer(trainer)
    dataset = _dataset(settings, spec)
    tracker = _tracker(settings)

    async def run() -> Any:
        engine = create_engine(settings, application_name="aether-ml-retrain")
        try:
            return await run_retrain(
                tracker,
                sessionmaker_for(engine),
                model_name=model or settings.ml_model_name,
                trainer_cls=trainer_cls,
                params=trainer_params,
                dataset=dataset,
                trainers=platform_trainers,
                rule=PromotionRule(min_log_loss_gain=min_log_loss_gain, max_auc_drop=max_auc_drop),
                backtest=backtest,
            )
        finally:
            await engine.dispose()

    with console.status("training the challenger"):
        try:
            decision = asyncio.run(run())
        except (SearchError, TrackingError, SignalBacktestError) as exc:
            raise _fail(str(exc)) from None
    verdict = "[green]promoted[/green]" if decision.promoted else "[yellow]kept the champion[/yellow]"
    console.print(f"{decision.model_name} v{decision.challenger_version}: {verdict} ({decision.reason})")


@app.command()
def signals(
    model: Annotated[str | None, typer.Option(help="registered model name (default AETHER_ML_MODEL_NAME)")] = None,
    horizon_s: Annotated[int, typer.Option(min=1, help="the model's label horizon in seconds")] = 3600,
    account: Annotated[str | None, typer.Option(help="follow the signals with orders for this account")] = None,
    quantity: Annotated[str, typer.Option(help="order quantity per signal (decimal)")] = "0.001",
) -> None:
    """Score streamed features with the champion into ml.signals.v1 (and, with --account, orders)."""
    from ml.signals.process import run_signals
    from ml.signals.strategy import FollowerConfig
    from ml.signals.worker import ModelMismatch
    from ml.tracking import CHAMPION, TrackingError, platform_trainers

    settings = _settings()
    follower = None
    if account is not None:
        try:
            amount = Decimal(quantity)
        except InvalidOperation:
            raise _fail(f"--quantity: {quantity!r} is not a decimal number") from None
        if not amount.is_finite() or amount <= 0:
            raise _fail("--quantity: must be a positive decimal")
        follower = FollowerConfig(account_id=account, quantity=amount)
    name = model or settings.ml_model_name
    try:
        champion = _tracker(settings).load(name, CHAMPION, platform_trainers)
        console.print(f"scoring with {name} v{champion.version} (champion)")
        asyncio.run(run_signals(settings, champion, horizon_s=horizon_s, follower=follower))
    except (TrackingError, ModelMismatch) as exc:
        raise _fail(str(exc)) from None


@app.command()
def ui(
    host: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="listen port")] = 5000,
) -> None:
    """Open the MLflow UI on the platform's tracking database and artifact store."""
    settings = _settings()
    env = {
        **os.environ,
        # Through the environment, never the command line (the URL carries the database password).
        "MLFLOW_BACKEND_STORE_URI": settings.tracking_url(),
        "MLFLOW_DEFAULT_ARTIFACT_ROOT": settings.ml_artifact_root,
    }
    console.print(f"MLflow UI on http://{host}:{port}")
    argv = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port)]
    os.execve(sys.executable, argv, env)  # noqa: S606 - fixed argument list, this interpreter
