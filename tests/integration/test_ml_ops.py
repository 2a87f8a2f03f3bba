"""MLflow on the test PostgreSQL (runs, registry, aliases, load back), retraining's promotion rule with its audit
entries, and the Optuna search shared by two worker processes, one of them SIGKILLed mid-trial and restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy as sa
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from ml.backtest_metric import FoldBacktest, SignalBacktest
from ml.retrain import KEPT, PROMOTED, PromotionRule, retrain
from ml.search import SearchError, check_search_space, open_study, purged_walk_forward, storage
from ml.signals.process import run_signals
from ml.signals.strategy import FollowerConfig, SignalFollower
from ml.signals.worker import SCHEMA, ModelMismatch, SignalWorker
from ml.tracking import CHALLENGER, CHAMPION, Tracker, TrackingError, ensure_tracking_database, tracking_url_for
from services.hitl.policy import ApprovalFacts, PolicyRules, RequestKind, needs_approval
from shared.audit.log import audit_log
from shared.backtest.bars import Bar
from shared.config import AetherSettings
from shared.contracts.approvals import ApprovalReason
from shared.contracts.features import FeaturesComputed
from shared.contracts.orders import SubmitOrder
from shared.contracts.registry import new_envelope, parse_as
from shared.contracts.signals import SignalPublished
from shared.db import UnitOfWork, sessionmaker_for
from shared.domain.types import OrderSide
from shared.events import Envelope, EventProducer, EventTables
from shared.events.topics import ANALYTICS_FEATURE_EVENTS, ML_SIGNALS, OMS_COMMANDS
from shared.venues.instruments import venue_precision
from tests.helpers import _drop_database, eventually
from tests.kit.events import TopicReader
from tests.ml_kit import (
    FIT_LOG_ENV,
    HANG_FILE_ENV,
    EmptySpaceTrainer,
    LogisticTestTrainer,
    kit_trainers,
    synthetic_dataset,
)

REPO = Path(__file__).resolve().parents[2]


def _side_database(database_url: str, suffix: str) -> Iterator[str]:
    url = tracking_url_for(database_url, f"{make_url(database_url).database}_{suffix}")
    admin = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    _drop_database(admin, make_url(url).database or "")
    ensure_tracking_database(database_url, url)
    yield url
    _drop_database(admin, make_url(url).database or "")


@pytest.fixture(scope="module")
def mlflow_url(database_url: str) -> Iterator[str]:
    yield from _side_database(database_url, "mlflow")


@pytest.fixture(scope="module")
def optuna_url(database_url: str) -> Iterator[str]:
    yield from _side_database(database_url, "optuna")


@pytest.fixture(scope="module")
def tracker(mlflow_url: str, tmp_path_factory: pytest.TempPathFactory) -> Tracker:
    return Tracker(mlflow_url, str(tmp_path_factory.mktemp("artifacts")), "tests")


def test_run_logged_registered_aliased_and_loaded_back(tracker: Tracker) -> None:
    dataset = synthetic_dataset(300)
    trainer = LogisticTestTrainer({"C": 0.5})
    trainer.fit(dataset.features, dataset.labels, dataset.weights)
    run_id = tracker.log_training(trainer, dataset, {"log_loss": 0.41}, run_name="registry-test")

    run = tracker.client.get_run(run_id)
    assert run.data.params["C"] == "0.5"
    assert run.data.params["trainer"] == "test-logistic"
    assert run.data.metrics["log_loss"] == pytest.approx(0.41)
    assert run.data.tags["aether.dataset_version"] == dataset.version
    assert len(run.data.tags["aether.code_version"]) >= 7

    version = tracker.register(run_id, "registry-test")
    tracker.set_alias("registry-test", CHAMPION, version)
    assert tracker.alias_version("registry-test", CHAMPION) == version
    assert tracker.alias_version("registry-test", CHALLENGER) is None
    loaded = tracker.load("registry-test", CHAMPION, kit_trainers)
    assert loaded.version == version
    assert loaded.dataset_version == dataset.version
    assert np.array_equal(loaded.trainer.predict_proba(dataset.features), trainer.predict_proba(dataset.features))

    with pytest.raises(TrackingError, match="no 'challenger' version"):
        tracker.load("registry-test", CHALLENGER, kit_trainers)
    with pytest.raises(TrackingError, match="alias 'best'"):
        tracker.set_alias("registry-test", "best", version)


async def _audit_actions(engine: AsyncEngine, target: str) -> list[tuple[str, dict[str, object]]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(audit_log.c.action, audit_log.c.details).where(audit_log.c.target == target).order_by("seq")
        )
        return [(row.action, row.details) for row in rows]


async def test_retrain_promotes_a_better_challenger_never_a_worse_one(tracker: Tracker, engine: AsyncEngine) -> None:
    sessions = sessionmaker_for(engine)
    dataset = synthetic_dataset(600, seed=3)
    name = "retrain-test"

    async def run(params: dict[str, object]) -> object:
        return await retrain(
            tracker,
            sessions,
            model_name=name,
            trainer_cls=LogisticTestTrainer,
            params=params,
            dataset=dataset,
            trainers=kit_trainers,
            rule=PromotionRule(min_log_loss_gain=0.01),
        )

    first = await run({"C": 1.0, "planted_noise": True})  # no champion yet: a poor model still becomes one
    assert first.promoted
    assert first.champion is None
    better = await run({"C": 1.0})
    assert better.promoted
    assert better.champion_version == first.challenger_version
    assert better.challenger.log_loss < better.champion.log_loss - 0.01  # type: ignore[attr-defined]
    assert tracker.alias_version(name, CHAMPION) == better.challenger_version  # type: ignore[attr-defined]

    worse = await run({"C": 1.0, "planted_noise": True})
    assert not worse.promoted
    assert "log loss gain" in worse.reason
    assert tracker.alias_version(name, CHAMPION) == better.challenger_version  # type: ignore[attr-defined]
    assert tracker.alias_version(name, CHALLENGER) == worse.challenger_version  # type: ignore[attr-defined]

    entries = await _audit_actions(engine, f"model:{name}")
    assert [action for action, _ in entries] == [PROMOTED, PROMOTED, KEPT]
    assert entries[1][1]["challenger_version"] == better.challenger_version  # type: ignore[attr-defined]
    assert entries[2][1]["dataset_version"] == dataset.version


async def test_retrain_logs_the_challengers_after_fee_backtest_pnl(tracker: Tracker, engine: AsyncEngine) -> None:
    dataset = synthetic_dataset(400, seed=5)
    hour = timedelta(hours=1)
    # Hourly candles ending at each row's event_start; the price moves 3 % the way the row's label says.
    closes = [Decimal(50_000)]
    for label in dataset.labels[:-1]:
        closes.append((closes[-1] * (Decimal("1.03") if label else Decimal("0.97"))).quantize(Decimal("0.1")))
    ends = [datetime(2026, 1, 1, tzinfo=UTC) + i * hour for i in range(len(dataset))]
    bars = [Bar("BTC/USD", end - hour, end, c, c, c, c, Decimal(5)) for end, c in zip(ends, closes, strict=True)]
    spec = venue_precision("kraken").spec("BTC/USD")
    backtest = FoldBacktest(bars, SignalBacktest(spec, hour, Decimal("0.01"), Decimal(100_000), threshold=Decimal(0)))
    decision = await retrain(
        tracker,
        sessionmaker_for(engine),
        model_name="retrain-backtest",
        trainer_cls=LogisticTestTrainer,
        params={"C": 1.0},
        dataset=dataset,
        trainers=kit_trainers,
        backtest=backtest,
    )
    version = tracker.client.get_model_version("retrain-backtest", str(decision.challenger_version))
    logged = tracker.client.get_run(str(version.run_id)).data.metrics
    assert logged["fold_backtest_fills"] > 0
    assert logged["fold_backtest_fees"] > 0
    # A model that learnt the label earns on a price that follows it, after fees.
    assert logged["fold_backtest_pnl"] > 0


def test_bad_input_is_named() -> None:
    with pytest.raises(SearchError, match="empty search space"):
        check_search_space(EmptySpaceTrainer)
    with pytest.raises(SearchError, match="too few for 5 folds"):
        purged_walk_forward(synthetic_dataset(40), 5)


def test_folds_are_purged() -> None:
    dataset = synthetic_dataset(200)
    for fold in purged_walk_forward(dataset, 3):
        assert dataset.event_end[fold.train].max() < dataset.event_start[fold.test].min()


WORKER = """
import sys
from ml.search import run_search, storage
from tests.ml_kit import LogisticTestTrainer, synthetic_dataset
result = run_search(storage(sys.argv[1], heartbeat_s=1, grace_s=3), "hpo-test", LogisticTestTrainer,
                    synthetic_dataset(240), n_trials=int(sys.argv[2]), n_folds=2)
print("finished", result.finished)
"""


def _worker(url: str, n_trials: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, url, str(n_trials)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_hpo_two_workers_one_killed_mid_trial_and_restarted(optuna_url: str, tmp_path: Path) -> None:
    n_trials = 6
    hang, fit_log = tmp_path / "hang", tmp_path / "fits.log"
    victim = _worker(optuna_url, n_trials, {HANG_FILE_ENV: str(hang), FIT_LOG_ENV: str(fit_log)})
    other = _worker(optuna_url, n_trials, {FIT_LOG_ENV: str(fit_log)})
    deadline = time.monotonic() + 90
    while not hang.exists():
        assert victim.poll() is None, victim.communicate()[0]
        assert time.monotonic() < deadline, "the first worker never started a trial"
        time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    victim.wait()

    rdb = storage(optuna_url, heartbeat_s=1, grace_s=3)
    study = open_study(rdb, "hpo-test")
    while not (failed := study.get_trials(states=(TrialState.FAIL,))):  # the dead heartbeat's grace period
        assert time.monotonic() < deadline, "the dead worker's trial never went stale"
        optuna.storages.fail_stale_trials(study)  # what any live worker does before its next trial
        time.sleep(0.5)
    (dead,) = failed

    restarted = _worker(optuna_url, n_trials, {FIT_LOG_ENV: str(fit_log)})
    for worker in (other, restarted):
        output = worker.communicate(timeout=120)[0]
        assert worker.returncode == 0, output

    trials = study.get_trials()
    failed = [t for t in trials if t.state is TrialState.FAIL]
    assert [t.number for t in failed] == [dead.number]
    (retry,) = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == dead.number]
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry.params == dead.params
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert n_trials <= len(finished) <= n_trials + 2  # the retry, and two workers may each start the last one
    assert len(trials) == len(finished) + 1  # nothing else lost, waiting or left running
    # Every fit that ran is one reported step of one finished trial (the killed fit never finished): none ran twice.
    fits = Counter(line.split()[1] for line in fit_log.read_text().splitlines())
    expected: Counter[str] = Counter()
    for trial in finished:
        expected[str(trial.params["C"])] += len(trial.intermediate_values)
    assert fits == expected


SIGNAL_FEATURES = ("ofi", "depth_imbalance", "spread_bps", "rv_5")


def _features(**values: float | None) -> FeaturesComputed:
    fields: dict[str, object] = dict.fromkeys(FeaturesComputed.model_fields)
    fields.update(venue="paper", symbol="BTC/USD", bar_start=datetime(2026, 3, 1, tzinfo=UTC), bar_seconds=60)
    fields.update(values)
    return FeaturesComputed.model_validate(fields)


async def _outbox(engine: AsyncEngine, topic: str) -> list[Envelope]:
    tables = EventTables(SCHEMA)
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(tables.outbox.c.payload).where(tables.outbox.c.topic == topic))
        return [Envelope.model_validate(row.payload) for row in rows]


async def test_signals_from_features_and_a_low_confidence_order_goes_to_approval(
    tracker: Tracker, engine: AsyncEngine
) -> None:
    dataset = synthetic_dataset(300, feature_names=SIGNAL_FEATURES)
    trainer = LogisticTestTrainer({"C": 1.0})
    trainer.fit(dataset.features, dataset.labels, dataset.weights)
    version = tracker.register(tracker.log_training(trainer, dataset, {}), "signals-test")
    tracker.set_alias("signals-test", CHAMPION, version)
    champion = tracker.load("signals-test", CHAMPION, kit_trainers)
    assert champion.feature_names == SIGNAL_FEATURES
    assert champion.classes == ("down", "up")

    sessions, tables = sessionmaker_for(engine), EventTables(SCHEMA)
    worker = SignalWorker(tables, champion, horizon_s=3600)
    strong = _features(ofi=3.0, depth_imbalance=-2.0, spread_bps=0.1, rv_5=0.2)  # clearly "up" (1.5*f0 - f1)
    weak = _features(ofi=0.05, depth_imbalance=0.0, spread_bps=0.1, rv_5=0.2)  # close to a coin toss
    incomplete = _features(ofi=1.0, depth_imbalance=None, spread_bps=0.1, rv_5=0.2)
    async with UnitOfWork(sessions) as uow:
        for message in (strong, weak, incomplete):
            await worker.handle(uow.session, new_envelope(message, producer="analytics", aggregate_id="BTC/USD"))
    assert worker.skipped_incomplete == 1
    published = await _outbox(engine, ML_SIGNALS)
    signals = [parse_as(SignalPublished, envelope) for envelope in published]
    assert [s.label for s in signals] == ["up", "up"]
    assert signals[0].probability > Decimal("0.9")
    assert Decimal("0.5") <= signals[1].probability < Decimal("0.7")
    assert {(s.model_name, s.model_version, s.horizon_s) for s in signals} == {("signals-test", version, 3600)}
    expected = trainer.predict_proba(np.asarray([[3.0, -2.0, 0.1, 0.2]]))[0, 1]
    assert signals[0].probability == Decimal(str(float(expected))).quantize(Decimal("0.000001"))

    follower = SignalFollower(tables, FollowerConfig(account_id="acct-ml", quantity=Decimal("0.01")))
    async with UnitOfWork(sessions) as uow:
        for envelope in published:
            await follower.handle(uow.session, envelope)
    commands = [parse_as(SubmitOrder, envelope) for envelope in await _outbox(engine, OMS_COMMANDS)]
    assert [c.order.side for c in commands] == [OrderSide.BUY, OrderSide.BUY]
    assert [c.model_confidence for c in commands] == [s.probability for s in signals]
    assert len({c.order.client_order_id for c in commands}) == 2

    rules = PolicyRules(model_confidence_min=Decimal("0.7"))
    decisions = [
        needs_approval(rules, ApprovalFacts(kind=RequestKind.ORDER, model_confidence=c.model_confidence))
        for c in commands
    ]
    assert decisions == [[], [ApprovalReason.LOW_MODEL_CONFIDENCE]]


def test_a_model_whose_features_are_not_streamed_is_refused(tracker: Tracker) -> None:
    dataset = synthetic_dataset(200)  # features f0..f3: not on the features topic
    trainer = LogisticTestTrainer()
    trainer.fit(dataset.features, dataset.labels, dataset.weights)
    version = tracker.register(tracker.log_training(trainer, dataset, {}), "mismatch-test")
    tracker.set_alias("mismatch-test", CHAMPION, version)
    with pytest.raises(ModelMismatch, match="f0"):
        SignalWorker(EventTables(SCHEMA), tracker.load("mismatch-test", CHAMPION, kit_trainers), horizon_s=60)


async def test_signals_process_over_kafka(tracker: Tracker, settings: AetherSettings) -> None:
    dataset = synthetic_dataset(300, feature_names=SIGNAL_FEATURES)
    trainer = LogisticTestTrainer({"C": 1.0})
    trainer.fit(dataset.features, dataset.labels, dataset.weights)
    version = tracker.register(tracker.log_training(trainer, dataset, {}), "process-test")
    tracker.set_alias("process-test", CHAMPION, version)
    champion = tracker.load("process-test", CHAMPION, kit_trainers)
    symbol = f"ML{uuid.uuid4().hex[:6].upper()}/USD"  # this test's own: other tests publish features too
    account = f"acct-{uuid.uuid4().hex[:8]}"
    stop = asyncio.Event()
    process = asyncio.create_task(
        run_signals(
            settings,
            champion,
            horizon_s=60,
            follower=FollowerConfig(account_id=account, quantity=Decimal("0.5")),
            stop=stop,
        )
    )
    producer = EventProducer(bootstrap=settings.kafka_bootstrap, client_id="ml-test")
    await producer.start()
    try:
        async with TopicReader(settings.kafka_bootstrap, OMS_COMMANDS) as commands:
            features = _features(ofi=-3.0, depth_imbalance=2.0, spread_bps=0.1, rv_5=0.2).model_copy(
                update={"symbol": symbol}
            )
            await producer.send(
                ANALYTICS_FEATURE_EVENTS, new_envelope(features, producer="analytics", aggregate_id=symbol)
            )

            async def ours() -> list[SubmitOrder]:
                parsed = [parse_as(SubmitOrder, e) for e in commands.seen if e.type == SubmitOrder.TYPE]
                # The relay also publishes what earlier tests left in the ml outbox (BTC/USD signals): not ours.
                return [c for c in parsed if c.order.account_id == account and c.order.symbol == symbol]

            async def arrived() -> bool:
                commands._take(await commands.consumer.getmany(timeout_ms=200))
                return bool(await ours())

            await eventually(arrived, timeout_s=60, message="the follower's order")
            (command,) = await ours()
            assert command.order.side is OrderSide.SELL
            assert command.model_confidence is not None
            assert command.model_confidence > Decimal("0.9")
    finally:
        stop.set()
        await asyncio.wait_for(process, timeout=30)
        await producer.stop()


TRAINER_PARAMS = {
    "lightgbm": {"num_boost_round": 20, "num_threads": 1},
    "xgboost": {"num_boost_round": 20, "nthread": 1},
    "torch": {"window": 8, "hidden": 8, "epochs": 2, "batch_size": 64},
}


@pytest.mark.parametrize("name", sorted(TRAINER_PARAMS))
def test_each_platform_trainer_is_logged_registered_and_loaded_back_predicting_the_same(
    tracker: Tracker, name: str
) -> None:
    """The three trainers, on a dataset the project builds from replayed market data (tests/kit/ml.py), through
    MLflow: logged, registered, aliased champion, loaded back with the platform's registry, predicting the same
    (bitwise for the tree models, within 1e-6 for torch on the CPU)."""
    from ml.tracking import platform_trainers
    from ml.trainers import create
    from tests.kit import ml as kit

    data = kit.dataset(f"{name.upper()}/USD", 400)
    model = create(name, TRAINER_PARAMS[name], 5, classes=data.classes, feature_names=data.feature_names)
    model.fit(data.features, data.labels, data.weights)
    run_id = tracker.log_training(model, data, {"log_loss": 1.0}, run_name=f"trainer-{name}")
    model_name = f"platform-{name}"
    tracker.set_alias(model_name, CHAMPION, tracker.register(run_id, model_name))
    loaded = tracker.load(model_name, CHAMPION, platform_trainers)
    assert loaded.dataset_version == data.version
    assert type(loaded.trainer).name == name
    ours, theirs = model.predict_proba(data.features), loaded.trainer.predict_proba(data.features)
    if name == "torch":
        assert np.abs(ours - theirs).max() <= 1e-6
    else:
        assert np.array_equal(ours, theirs)
