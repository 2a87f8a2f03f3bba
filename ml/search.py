"""Hyperparameter search (`aether ml hpo`): one Optuna study in PostgreSQL shared by any number of worker processes.

The study lives in its own database (`aether_optuna`: Optuna, like MLflow, keeps an `alembic_version` table of its
own, which would collide with the platform's). Workers send a heartbeat; a trial whose worker died (killed, OOM,
node lost) is marked failed by the next worker after the grace period and retried once with the same parameters
(`RetryHeartbeatStaleTrialCallback`), so a study killed half-way resumes where it stood: no trial lost, none run twice.
Each trial scores the trainer's parameters on purged walk-forward folds and is pruned on the median of its peers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import psycopg
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from ml import validation
from ml.datasets import Dataset
from ml.metrics import log_loss
from ml.trainers.base import Trainer
from ml.validation import Fold, FoldError

OPTUNA_DATABASE = "aether_optuna"
HEARTBEAT_S = 5
GRACE_S = 20
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_SCHEMA_LOCK = 0x0AE7_0715  # pg_advisory_lock key: Optuna's table creation


class SearchError(ValueError):
    """A search that cannot run: an empty search space, too few rows for the folds (the message names it)."""


def purged_walk_forward(dataset: Dataset, n_folds: int, *, min_train: int = 20) -> list[Fold]:
    """`n_folds` purged walk-forward splits of `dataset` (ml.validation), each keeping at least `min_train` training
    rows; too few rows is a SearchError naming the dataset."""
    if n_folds < 1:
        raise SearchError(f"n_folds must be >= 1, got {n_folds}")
    try:
        folds = validation.purged_walk_forward(dataset.event_start, dataset.event_end, n_folds)
    except FoldError as exc:
        raise SearchError(f"dataset {dataset.version}: {exc}") from None
    for k, fold in enumerate(folds, start=1):
        if fold.train.size < min_train:
            raise SearchError(
                f"dataset {dataset.version}: fold {k} keeps {fold.train.size} training rows after purging "
                f"(at least {min_train} needed); {len(dataset)} rows are too few for {n_folds} folds"
            )
    return folds


def new_trainer(trainer_cls: type[Trainer], params: dict[str, Any], seed: int) -> Trainer:
    """A fresh, unfitted trainer (every trainer takes its parameters and seed)."""
    return trainer_cls(params, seed)  # type: ignore[call-arg]  # the protocol declares no constructor


def fold_log_loss(trainer: Trainer, dataset: Dataset, fold: Fold) -> float:
    """Train `trainer` on the fold's training rows and return its log loss on the test rows."""
    trainer.fit(dataset.features[fold.train], dataset.labels[fold.train], dataset.weights[fold.train])
    proba = trainer.predict_proba(dataset.features[fold.test])
    return log_loss(dataset.labels[fold.test], proba)


class _ProbeTrial:
    """Answers a search space with the lowest value of each range (only to see what it declares)."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return low

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return low

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return next(iter(choices))


def check_search_space(trainer_cls: type[Trainer]) -> None:
    """SearchError when the trainer declares no parameter to search."""
    if not trainer_cls.search_space(_ProbeTrial()):
        raise SearchError(f"trainer {trainer_cls.name!r} declares an empty search space: nothing to search")


def storage(url: str, *, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S) -> RDBStorage:
    """The shared study storage (PostgreSQL), with heartbeats and one retry of a dead worker's trial."""
    # Optuna creates its tables on first use; workers starting together on a fresh database would race on
    # CREATE TYPE/TABLE (a unique violation in pg_type), so that first use is serialized on an advisory lock.
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn, warnings.catch_warnings():
        # Heartbeats and the retry callback are "experimental" in Optuna's terms (since 2.8); we rely on them knowingly.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
        try:
            return RDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=heartbeat_s,
                grace_period=grace_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))


def open_study(rdb: RDBStorage, name: str) -> optuna.Study:
    """Create or join the study `name` (minimise the purged log loss, median pruning)."""
    return optuna.create_study(
        study_name=name,
        storage=rdb,
        direction="minimize",
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )


@dataclass(frozen=True)
class SearchResult:
    """Where the study stands after this worker stopped."""

    finished: int
    best_value: float | None
    best_params: dict[str, Any]


def run_search(
    rdb: RDBStorage,
    study_name: str,
    trainer_cls: type[Trainer],
    dataset: Dataset,
    *,
    n_trials: int,
    n_folds: int = 3,
    seed: int = 7,
    on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> SearchResult:
    """Work on the study until it holds `n_trials` finished trials (every worker stops at that count)."""
    check_search_space(trainer_cls)
    folds = purged_walk_forward(dataset, n_folds)
    study = open_study(rdb, study_name)

    def objective(trial: optuna.Trial) -> float:
        params = trainer_cls.search_space(trial)
        losses: list[float] = []
        for step, fold in enumerate(folds):
            losses.append(fold_log_loss(new_trainer(trainer_cls, params, seed), dataset, fold))
            trial.report(float(np.mean(losses)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(losses))

    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = [
        MaxTrialsCallback(n_trials, states=FINISHED)
    ]
    if on_trial is not None:
        callbacks.append(on_trial)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial is queued again (WAITING) with its parameters
    if len(study.get_trials(deepcopy=False, states=FINISHED)) < n_trials:
        study.optimize(objective, callbacks=callbacks, catch=())
    # Retries queued after the count was reached still run: a killed trial is never dropped.
    while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        study.optimize(objective, n_trials=1, callbacks=callbacks[1:], catch=())
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = min(complete, key=lambda t: t.value if t.value is not None else np.inf) if complete else None
    return SearchResult(
        finished=len(study.get_trials(deepcopy=False, states=FINISHED)),
        best_value=best.value if best is not None else None,
        best_params=dict(best.params) if best is not None else {},
    )
