"""MLflow tracking: one run per trained model (with a nested run per candidate), the report
and card as artifacts, and the pipeline logged and registered as `tmdb-analytics-<model>`
with a signature (the canonical film record, every field optional) and an input example, so
that pyfunc users and `mlflow models serve` know what to send. A version training activates
becomes the registered model's `champion` (`app.ml.mlflow_link`).

The store defaults to SQLite under the project's data directory (`.data/mlruns/mlflow.db`,
artifacts beside it), so a fresh clone tracks locally with no server; `MLFLOW_TRACKING_URI`
(or `--tracking-uri`) points it anywhere else.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sklearn.pipeline import Pipeline

from app.ml import artifacts, mlflow_link
from app.ml.card import MlflowInfo, ModelCard
from app.ml.features import LIST_FIELDS
from training.candidates import Task
from training.types import Evaluation

# Fields of the canonical record (`app.ml.features.film_record`) that the pipeline reads.
STRING_FIELDS = ("title", "release_date", "original_language")
NUMBER_FIELDS = ("budget", "runtime")
FLAG_FIELDS = ("homepage", "tagline", "belongs_to_collection")
PEOPLE_FIELDS = ("directors", "actors")
EXAMPLE_FILMS = 2


def default_tracking_uri(mlflow_dir: Path) -> str:
    return f"sqlite:///{(mlflow_dir / 'mlflow.db').resolve()}"


def _numeric(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            out[prefix + key] = float(value)
        elif isinstance(value, dict):
            out.update(_numeric(f"{prefix}{key}_", value))
    return out


def _flat_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(_flat_params(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = str(value)
    return out


class Tracker:
    def __init__(self, tracking_uri: str | None, mlflow_dir: Path, experiment: str) -> None:
        import mlflow

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            mlflow_dir.mkdir(parents=True, exist_ok=True)
            uri = default_tracking_uri(mlflow_dir)
        exported = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(uri)
        # mlflow also exports the URI to the environment, where the next Tracker of this
        # process (the test suite, a program training twice) would take it for the user's own.
        if exported is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = exported
        self.uri = uri
        self.experiment = experiment
        found = mlflow.get_experiment_by_name(experiment)
        if found is None:
            location = None
            if uri.startswith("sqlite:"):
                # A SQLite store has no artifact root of its own; keep artifacts beside it
                # rather than in ./mlruns of whatever directory training ran from.
                location = (mlflow_dir / "artifacts").resolve().as_uri()
            self.experiment_id = mlflow.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = found.experiment_id

    def set_champion(self, info: MlflowInfo, by: str) -> None:
        """The version just activated is MLflow's `champion` too."""
        if info.registered_model and info.registered_version:
            mlflow_link.set_champion(self.uri, info.registered_model, info.registered_version, by)

    def log(
        self,
        task: Task,
        card: ModelCard,
        ev: Evaluation,
        pipeline: Pipeline,
        staging: Path,
        films: Sequence[dict[str, Any]],
    ) -> MlflowInfo:
        predict_fn = "predict_proba" if task.kind == "classification" else "predict"
        return self.log_run(task.name, predict_fn, card, pipeline, staging, films)

    def log_run(
        self,
        name: str,
        predict_fn: str,
        card: ModelCard,
        pipeline: Pipeline,
        staging: Path,
        films: Sequence[dict[str, Any]],
    ) -> MlflowInfo:
        """One run for model `name` (any model, engagement included): params, metrics,
        candidates, report and card, and the pipeline registered as `tmdb-analytics-<name>`
        with a signature and an input example drawn from `films`."""
        import mlflow
        import mlflow.sklearn

        with mlflow.start_run(
            experiment_id=self.experiment_id, run_name=f"{name}-{card.version}"
        ) as run:
            mlflow.set_tags(
                {
                    "model": name,
                    "version": card.version,
                    "git_sha": card.git_sha or "unknown",
                    "data_sha256": card.data.sha256,
                    "split": card.data.split.strategy,
                }
            )
            mlflow.log_params(
                {
                    **_flat_params(card.params),
                    "data_source": card.data.source,
                    "data_rows": card.data.rows,
                    "split_train": card.data.split.train,
                    "split_validation": card.data.split.validation,
                    "split_test": card.data.split.test,
                }
            )
            mlflow.log_metrics(
                {**_numeric("test_", card.metrics), **_numeric("val_", card.validation_metrics)}
            )
            for i, cand in enumerate(card.candidates):
                with mlflow.start_run(
                    experiment_id=self.experiment_id,
                    run_name=f"{name}-{card.version}-{i}-{cand.family}",
                    nested=True,
                ):
                    mlflow.log_params({"family": cand.family, **_flat_params(cand.params)})
                    mlflow.log_metrics(
                        {**_numeric("val_", cand.validation), "fit_seconds": cand.fit_seconds}
                    )
            report = staging / artifacts.REPORT_FILE
            if report.exists():
                mlflow.log_artifact(str(report))
            mlflow.log_dict(card.model_dump(mode="json"), artifacts.CARD_FILE)
            registered = mlflow_link.registered_name(name)
            example = input_example(films)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. the pickle format's caution
                info = mlflow.sklearn.log_model(
                    pipeline,
                    name="model",
                    registered_model_name=registered,
                    signature=signature(predict_fn, pipeline, example),
                    input_example=example,
                    # Pinned from this environment: skips MLflow's requirement inference,
                    # which reloads the model in a subprocess (slow) and cannot see that
                    # the pickle needs the `app` package.
                    pip_requirements=[
                        f"{pkg}=={ver}"
                        for pkg, ver in card.library_versions.items()
                        if pkg in ("scikit-learn", "numpy", "pandas", "joblib", "scipy", "lightgbm")
                    ],
                    # The served artifact is a pickle too (model.joblib); skops would refuse
                    # the custom feature transformer as an "untrusted type".
                    serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
                    pyfunc_predict_fn=predict_fn,
                )
            version = getattr(info, "registered_model_version", None)
            return MlflowInfo(
                tracking_uri=self.uri,
                experiment=self.experiment,
                run_id=run.info.run_id,
                model_uri=info.model_uri,
                registered_model=registered,
                registered_version=str(version) if version is not None else None,
            )


def input_example(films: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A few training films as the pipeline takes them: the signature's fields only (no
    outcome, id or votes; the films come oldest first). Films with every scalar fact known:
    MLflow turns a missing string into the text "None" when it checks the example against
    the signature."""
    complete = [
        f for f in films if all(f.get(k) is not None for k in (*STRING_FIELDS, *NUMBER_FIELDS))
    ]
    chosen = (complete or list(films))[-EXAMPLE_FILMS:]  # the newest: films look like that now
    inputs = {*STRING_FIELDS, *NUMBER_FIELDS, *LIST_FIELDS, *FLAG_FIELDS, *PEOPLE_FIELDS}
    return [{k: v for k, v in f.items() if k in inputs} for f in chosen]


def signature(predict_fn: str, pipeline: Pipeline, example: list[dict[str, Any]]) -> Any:
    """Inputs: the canonical film record, every field optional (the model was trained to live
    with unknown facts); outputs: what the pyfunc predict returns on the example."""
    import pandas as pd
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec
    from mlflow.types.schema import Array

    columns: list[ColSpec | TensorSpec] = [
        *(ColSpec(DataType.string, f, required=False) for f in STRING_FIELDS),
        *(ColSpec(DataType.double, f, required=False) for f in NUMBER_FIELDS),
        *(ColSpec(Array(DataType.string), f, required=False) for f in LIST_FIELDS),
        *(ColSpec(DataType.boolean, f, required=False) for f in FLAG_FIELDS),
        *(ColSpec(Array(DataType.string), f, required=False) for f in PEOPLE_FIELDS),
    ]
    frame = pd.DataFrame(example)
    output = getattr(pipeline, predict_fn)(frame)
    return ModelSignature(inputs=Schema(columns), outputs=infer_signature(frame, output).outputs)
