"""Retraining (`aether ml retrain`): train a challenger on new data, compare it with the champion on the most recent
purged fold under a declared rule, and promote it or keep the champion, audited (docs/ml.md).

Both configurations are fitted on the same purged training rows and scored on the same most recent test rows, so
neither has seen the rows it is judged on. The challenger is always registered (alias `challenger`); `champion`
moves to it only when the rule holds, in the same transaction as the audit entry that records the decision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ml.backtest_metric import FoldBacktest
from ml.datasets import Dataset
from ml.metrics import auc, log_loss
from ml.search import new_trainer, purged_walk_forward
from ml.tracking import CHALLENGER, CHAMPION, Tracker, TrainerResolver, code_version
from ml.trainers.base import Trainer
from ml.validation import Fold
from shared import audit

ACTOR = "ml-retrain"
PROMOTED = "ml.model.promoted"
KEPT = "ml.model.kept"


@dataclass(frozen=True)
class PromotionRule:
    """Promote when the challenger's log loss beats the champion's by `min_log_loss_gain` and its AUC is not lower
    than the champion's by more than `max_auc_drop`."""

    min_log_loss_gain: float = 0.002
    max_auc_drop: float = 0.0

    def decide(self, challenger: Score, champion: Score | None) -> tuple[bool, str]:
        """(promote?, why)."""
        if champion is None:
            return True, "no champion yet"
        gain = champion.log_loss - challenger.log_loss
        if gain < self.min_log_loss_gain:
            return False, f"log loss gain {gain:.6f} below the required {self.min_log_loss_gain}"
        if challenger.auc < champion.auc - self.max_auc_drop:
            return False, f"AUC {challenger.auc:.6f} below the champion's {champion.auc:.6f} - {self.max_auc_drop}"
        return True, f"log loss better by {gain:.6f}, AUC {challenger.auc:.6f} vs {champion.auc:.6f}"


@dataclass(frozen=True)
class Score:
    """A model's scores on the test rows of the most recent purged fold."""

    log_loss: float
    auc: float


@dataclass(frozen=True)
class RetrainDecision:
    """What a retraining did: the challenger's version, the champion it met, the decision and why."""

    model_name: str
    challenger_version: int
    champion_version: int | None
    promoted: bool
    reason: str
    challenger: Score
    champion: Score | None


def score(proba: npt.NDArray[np.float64], labels: npt.NDArray[np.int64], n_classes: int) -> Score:
    """Log loss and AUC (one-vs-rest over the classes present when more than two) of `proba` on `labels`."""
    if proba.shape[1] != n_classes:
        raise ValueError(f"{proba.shape[1]} probability columns for {n_classes} classes")
    return Score(log_loss=log_loss(labels, proba), auc=auc(labels, proba))


def _fit_and_predict(trainer: Trainer, dataset: Dataset, fold: Fold) -> tuple[Score, npt.NDArray[np.float64]]:
    trainer.fit(dataset.features[fold.train], dataset.labels[fold.train], dataset.weights[fold.train])
    proba = trainer.predict_proba(dataset.features[fold.test])
    return score(proba, dataset.labels[fold.test], len(dataset.classes)), proba


async def retrain(
    tracker: Tracker,
    sessions: async_sessionmaker[AsyncSession],
    *,
    model_name: str,
    trainer_cls: type[Trainer],
    params: dict[str, Any],
    dataset: Dataset,
    trainers: TrainerResolver,
    rule: PromotionRule | None = None,
    seed: int = 7,
    n_folds: int = 3,
    actor: str = ACTOR,
    backtest: FoldBacktest | None = None,
) -> RetrainDecision:
    """Train, register and judge a challenger; move `champion` to it only under `rule`, audited either way.

    With `backtest`, the challenger's signal on the fold is also backtested: `fold_backtest_pnl` (after fees),
    `fold_backtest_fees` and `fold_backtest_fills` join its logged metrics (they inform; the rule does not use them).
    """
    rule = rule or PromotionRule()
    fold = purged_walk_forward(dataset, n_folds)[-1]
    challenger = new_trainer(trainer_cls, params, seed)
    challenger_score, challenger_proba = _fit_and_predict(challenger, dataset, fold)
    champion_version: int | None = None
    champion_score: Score | None = None
    if tracker.alias_version(model_name, CHAMPION) is not None:
        champion = tracker.load(model_name, CHAMPION, trainers)
        champion_version = champion.version
        refit = new_trainer(type(champion.trainer), champion.trainer.params, champion.trainer.seed)
        champion_score, _ = _fit_and_predict(refit, dataset, fold)
    promoted, reason = rule.decide(challenger_score, champion_score)
    metrics = {f"fold_{key}": value for key, value in asdict(challenger_score).items()}
    if champion_score is not None:
        metrics.update({f"champion_fold_{key}": value for key, value in asdict(champion_score).items()})
    if backtest is not None:
        metrics.update(backtest.metrics(challenger_proba, dataset, fold.test, "fold_backtest_"))
    run_id = tracker.log_training(challenger, dataset, metrics, run_name=f"retrain-{model_name}")
    version = tracker.register(run_id, model_name)
    tracker.set_alias(model_name, CHALLENGER, version)
    decision = RetrainDecision(
        model_name, version, champion_version, promoted, reason, challenger_score, champion_score
    )
    details: dict[str, Any] = {
        "model": model_name,
        "challenger_version": version,
        "champion_version": champion_version,
        "run_id": run_id,
        "dataset_version": dataset.version,
        "code_version": code_version(),
        "rule": {k: str(v) for k, v in asdict(rule).items()},
        "challenger": {k: str(v) for k, v in asdict(challenger_score).items()},
        "champion": None if champion_score is None else {k: str(v) for k, v in asdict(champion_score).items()},
        "reason": reason,
    }
    try:
        async with sessions() as session, session.begin():
            await audit.append(
                session,
                actor=actor,
                action=PROMOTED if promoted else KEPT,
                target=f"model:{model_name}",
                details=details,
            )
            if promoted:
                tracker.set_alias(model_name, CHAMPION, version)  # before the commit: no promotion without its entry
    except BaseException:
        if promoted:  # the entry did not commit: put the champion back
            tracker.restore_alias(model_name, CHAMPION, champion_version)
        raise
    return decision
