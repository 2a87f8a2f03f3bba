"""MLflow tracking and model registry: runs (params, metrics, dataset version, code version) and registered models
with the aliases `champion` and `challenger`.

The backend store is its own PostgreSQL database (`aether_mlflow` on the platform's server, docs/dependencies.md);
artifacts go under `AETHER_ML_ARTIFACT_ROOT` (a directory here, `s3://bucket/prefix` in production).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from ml.datasets import Dataset
from ml.trainers.base import Trainer
from shared.config import AetherSettings

CHAMPION = "champion"
CHALLENGER = "challenger"
ALIASES = (CHAMPION, CHALLENGER)
TRACKING_DATABASE = "aether_mlflow"
MODEL_ARTIFACT = "model"
# Tags every run and model version carries (what `load` needs to rebuild the trainer, what an audit cites).
TAG_TRAINER = "aether.trainer"
TAG_DATASET = "aether.dataset_version"
TAG_CODE = "aether.code_version"
TAG_FEATURES = "aether.features"  # the feature names, in the model's column order, comma-separated
TAG_CLASSES = "aether.classes"  # the class names, in predict_proba's column order
MODEL_TAGS = (TAG_TRAINER, TAG_DATASET, TAG_CODE, TAG_FEATURES, TAG_CLASSES)

TrainerResolver = Callable[[str], type[Trainer]]


class TrackingError(RuntimeError):
    """The tracking server or registry refused or lacks what was asked (the message names it)."""


class MLSettings(AetherSettings):
    """Where MLflow keeps runs and models (`AETHER_ML_*`)."""

    ml_tracking_url: SecretStr | None = None  # default: database `aether_mlflow` on the platform's server
    ml_artifact_root: str = ".aether/mlflow-artifacts"  # a directory, or s3://bucket/prefix in production
    ml_experiment: str = "aether"
    ml_model_name: str = "aether-direction"

    def tracking_url(self) -> str:
        """The SQLAlchemy URL of MLflow's backend store (a synchronous psycopg URL)."""
        if self.ml_tracking_url is not None:
            return self.ml_tracking_url.get_secret_value()
        return tracking_url_for(self.database_url.get_secret_value())


def tracking_url_for(database_url: str, database: str = TRACKING_DATABASE) -> str:
    """MLflow's backend URL next to the platform database `database_url` (same server and role)."""
    url = make_url(database_url).set(drivername="postgresql+psycopg", database=database)
    return url.render_as_string(hide_password=False)


def ensure_tracking_database(admin_url: str, tracking_url: str) -> None:
    """Create MLflow's database when it is missing (`admin_url`: a role that may CREATE DATABASE)."""
    name = make_url(tracking_url).database
    if not name:
        raise TrackingError("the MLflow tracking URL names no database")
    admin = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


def artifact_location(root: str, experiment: str) -> str:
    """The experiment's artifact URI under `root` (a local directory becomes a file:// URI)."""
    if "://" in root:
        return f"{root.rstrip('/')}/{experiment}"
    directory = Path(root).expanduser().resolve() / experiment
    directory.mkdir(parents=True, exist_ok=True)
    return directory.as_uri()


def code_version() -> str:
    """The git commit this code runs from, else the installed package version."""
    root = Path(__file__).resolve().parent.parent
    git = shutil.which("git")
    try:
        if git is None:
            raise FileNotFoundError("git")
        argv = [git, "rev-parse", "HEAD"]
        out = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=10, check=True)  # noqa: S603 - fixed argument list
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        try:
            return f"aether-platform=={metadata.version('aether-platform')}"
        except metadata.PackageNotFoundError:
            return "unknown"


@dataclass(frozen=True)
class LoadedModel:
    """A registered model version loaded back into its trainer."""

    name: str
    version: int
    run_id: str
    dataset_version: str
    feature_names: tuple[str, ...]
    classes: tuple[str, ...]
    trainer: Trainer


class Tracker:
    """One experiment's runs and the model registry, through `MlflowClient`."""

    def __init__(self, tracking_url: str, artifact_root: str, experiment: str) -> None:
        self.client = MlflowClient(tracking_uri=tracking_url, registry_uri=tracking_url)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            location = artifact_location(artifact_root, experiment)
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            except MlflowException:  # created by another process meanwhile
                again = self.client.get_experiment_by_name(experiment)
                if again is None:
                    raise
                self.experiment_id = again.experiment_id

    @classmethod
    def from_settings(cls, settings: MLSettings) -> Tracker:
        """The tracker the settings describe."""
        return cls(settings.tracking_url(), settings.ml_artifact_root, settings.ml_experiment)

    def log_training(
        self,
        trainer: Trainer,
        dataset: Dataset,
        metrics: Mapping[str, float],
        *,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Log one trained model as a run (params, metrics, dataset and code version, the saved model); its id."""
        all_tags = {
            TAG_TRAINER: trainer.name,
            TAG_DATASET: dataset.version,
            TAG_CODE: code_version(),
            TAG_FEATURES: ",".join(dataset.feature_names),
            TAG_CLASSES: ",".join(dataset.classes),
            **(tags or {}),
        }
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        run_id = run.info.run_id
        try:
            params: dict[str, Any] = {
                **trainer.params,
                "trainer": trainer.name,
                "seed": trainer.seed,
                "format_version": trainer.format_version,
                "dataset.rows": len(dataset),
            }
            self.client.log_batch(
                run_id,
                metrics=[Metric(key, float(value), 0, 0) for key, value in metrics.items()],
                params=[Param(key, str(value)[:6000]) for key, value in params.items()],
                tags=[RunTag("dataset.symbol", dataset.spec.symbol), RunTag("dataset.venue", dataset.spec.venue)],
            )
            with tempfile.TemporaryDirectory() as tmp:
                trainer.save(Path(tmp))
                self.client.log_artifacts(run_id, tmp, MODEL_ARTIFACT)
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id)
        return str(run_id)

    def register(self, run_id: str, name: str) -> int:
        """Register the run's model under `name`; the new version number."""
        run = self.client.get_run(run_id)
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            try:
                self.client.create_registered_model(name)
            except MlflowException:  # registered by another process meanwhile
                self.client.get_registered_model(name)
        tags = {key: run.data.tags[key] for key in MODEL_TAGS if key in run.data.tags}
        version = self.client.create_model_version(
            name, source=f"{run.info.artifact_uri}/{MODEL_ARTIFACT}", run_id=run_id, tags=tags
        )
        return int(version.version)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point `alias` (champion or challenger) of model `name` at `version`."""
        if alias not in ALIASES:
            raise TrackingError(f"alias {alias!r} is not one of {', '.join(ALIASES)}")
        self.client.set_registered_model_alias(name, alias, str(version))

    def restore_alias(self, name: str, alias: str, version: int | None) -> None:
        """Point `alias` back at `version` (None: remove the alias)."""
        if version is None:
            self.client.delete_registered_model_alias(name, alias)
        else:
            self.set_alias(name, alias, version)

    def alias_version(self, name: str, alias: str) -> int | None:
        """The version `alias` points at, None when the model or the alias does not exist."""
        try:
            return int(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def load(self, name: str, alias: str, trainers: TrainerResolver) -> LoadedModel:
        """Download the version `alias` points at and load it with its trainer (TrackingError when there is none)."""
        try:
            version = self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            raise TrackingError(f"model {name!r} has no {alias!r} version") from None
        trainer_name = version.tags.get(TAG_TRAINER)
        if not trainer_name or not version.run_id:
            raise TrackingError(f"model {name!r} version {version.version} names no trainer ({TAG_TRAINER})")
        with tempfile.TemporaryDirectory() as tmp:
            path = self.client.download_artifacts(version.run_id, MODEL_ARTIFACT, tmp)
            trainer = trainers(trainer_name).load(Path(path))
        return LoadedModel(
            name=name,
            version=int(version.version),
            run_id=str(version.run_id),
            dataset_version=version.tags.get(TAG_DATASET, ""),
            feature_names=tuple(filter(None, version.tags.get(TAG_FEATURES, "").split(","))),
            classes=tuple(filter(None, version.tags.get(TAG_CLASSES, "").split(","))),
            trainer=trainer,
        )


def platform_trainers(name: str) -> type[Trainer]:
    """The platform's trainer registry (`ml.trainers.trainer`: LightGBM, XGBoost, PyTorch)."""
    from ml.trainers import trainer

    return trainer(name)
