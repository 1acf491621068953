"""Train, compare, evaluate and save the `revenue` and `hit` models (and `engagement`, whose
two outputs follow their own recipe in `training.engagement`).

For each task: split its films by release date, fit every candidate on train and score it on
validation, keep the best, refit it on train+validation and evaluate once on test (films no
fitted model has seen), then fit the served model on all films with the chosen settings
(the test figures are the honest estimate for it: it only has more data). The artifact, card,
report and MLflow run are written, and the new version is activated.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import numpy.typing as npt
import orjson
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from app.ml import artifacts
from app.ml.card import (
    ArtifactInfo,
    DataInfo,
    IntervalSpec,
    ModelCard,
    ProfileInfo,
)
from app.ml.drift import PROFILE_FILE, InputReader, build_profile
from app.ml.estimators import fit_weighted
from app.ml.explain import GroupOcclusion
from app.ml.fastpath import pipeline_scorer
from app.ml.features import LIST_FIELDS, FilmFeatures
from app.ml.shap_explain import ShapExplainer
from training import evaluate, selection
from training.candidates import (
    PEOPLE_DROPOUT,
    TASKS,
    CandidateSpec,
    Task,
    ablation_candidate,
    build_pipeline,
    fit_target,
    predict,
    recency_weights,
)
from training.data import Dataset
from training.engagement import ENGAGEMENT, train_engagement
from training.split import random_split, time_split
from training.types import Evaluation, TrainedModel, TrainOptions

log = logging.getLogger("training")
Array = npt.NDArray[np.float64]
REPO_ROOT = Path(__file__).resolve().parent.parent
INTERVAL_QUANTILES = (0.1, 0.9)
# Interval levels a request may ask for; 0.80 is the default, as before.
INTERVAL_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
DEFAULT_LEVEL = "0.80"
INPUT_FIELDS = [
    "title",
    "budget",
    "runtime",
    "release_date",
    "original_language",
    *LIST_FIELDS,
    "homepage",
    "tagline",
    "belongs_to_collection",
    "cast",
    "crew",
    "overview",
    "content_rating",
]


def _strip_people(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "directors": [], "actors": []} for r in records]


def _strip_text(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "overview": "", "tagline_text": ""} for r in records]


def _budget_known(records: Sequence[dict[str, Any]]) -> npt.NDArray[np.bool_]:
    return np.asarray([r.get("budget") is not None for r in records], dtype=bool)


def _validation_scores(task: Task, y: Array, pred: Array) -> dict[str, float]:
    if task.kind == "regression":
        m = evaluate.regression_metrics(y, pred)
        return {"rmsle": m["rmsle"], "r2_log": m["r2_log"]}
    m2 = evaluate.classification_metrics(y, pred, 0.5)
    return {"roc_auc": float(m2["roc_auc"]), "brier": float(m2["brier"])}  # type: ignore[arg-type]


def evaluate_task(
    task: Task, records: Sequence[dict[str, Any]], options: TrainOptions, say: Callable[[str], None]
) -> tuple[Evaluation, Pipeline]:
    """Model selection and test evaluation; returns the evaluation and the served pipeline."""
    population = [r for r in records if task.population(r)]
    if len(population) < 30:
        raise ValueError(f"{task.name}: only {len(population)} films with a known target")
    split = (
        time_split(population)
        if options.split == "time"
        else random_split(population, options.seed)
    )
    seen = [*split.train, *split.validation]  # the development films
    # The release calendar: every film's date and budget (announced before release), whether
    # or not its outcome is known; outcomes never enter it.
    schedule = tuple((int(r["id"]), r["release_date"], r["budget"]) for r in records if "id" in r)
    sel = selection.select(task, seen, options.quick, options.seed, schedule, say)
    chosen, config = sel.chosen, sel.config
    y_seen, y_test = task.label(seen), task.label(split.test)
    oof_ok = sel.oof_fold >= 0
    say(f"  {task.name}: chose {chosen.family} on [{config.label()}]")

    def fit(films: Sequence[dict[str, Any]]) -> Pipeline:
        pipeline = build_pipeline(task, chosen, options.seed, config, schedule, sel.calibration)
        weights = recency_weights(films, sel.half_life)
        fitted: Pipeline = fit_weighted(pipeline, films, fit_target(task, chosen, films), weights)
        return fitted

    # One fit on the development films, one look at test.
    evaluated = fit(seen)
    pred_test = predict(task, evaluated, split.test)
    pred_test_no_people = predict(task, evaluated, _strip_people(split.test))
    test_budget = _budget_known(split.test)
    # Today's model on the same films: schema-1 features, the old default settings.
    baseline_spec = ablation_candidate(options.quick)
    baseline = build_pipeline(task, baseline_spec, options.seed).fit(seen, task.label(seen))
    pred_baseline = predict(task, baseline, split.test)
    metrics: dict[str, Any]
    interval_spec = None
    threshold: float | None = None
    calibration_info: dict[str, Any] | None = None
    if task.kind == "regression":
        metrics = dict(evaluate.regression_metrics(y_test, pred_test))
        metrics["rmsle_without_credits"] = evaluate.regression_metrics(y_test, pred_test_no_people)[
            "rmsle"
        ]
        metrics["rmsle_without_text"] = evaluate.regression_metrics(
            y_test, predict(task, evaluated, _strip_text(split.test))
        )["rmsle"]
        metrics["baseline_schema1_rmsle"] = evaluate.regression_metrics(y_test, pred_baseline)[
            "rmsle"
        ]
        # Conformal offsets from the out-of-fold residuals of the cross-validation (films
        # each fold model never saw), per budget group, at every offered level.
        residuals = y_seen[oof_ok] - sel.oof[oof_ok]
        known = _budget_known(seen)[oof_ok]
        levels = selection.conformal_levels(residuals, known, INTERVAL_LEVELS)
        coverage = {
            key: evaluate.interval_coverage(y_test, pred_test, test_budget, offsets)
            for key, offsets in levels.items()
        }
        metrics["interval_coverage"] = coverage[DEFAULT_LEVEL]
        for key in ("0.50", "0.80", "0.95"):
            metrics[f"interval_coverage_{key}"] = coverage[key]
        # The served offsets also use the test residuals of the development fit.
        all_residuals = np.concatenate([residuals, y_test - pred_test])
        all_known = np.concatenate([known, test_budget])
        served_levels = selection.conformal_levels(all_residuals, all_known, INTERVAL_LEVELS)
        interval_spec = IntervalSpec(
            method="split conformal on log1p(revenue) over out-of-fold residuals of the "
            "time-series cross-validation, Mondrian by budget known/unknown",
            quantiles=INTERVAL_QUANTILES,
            offsets=served_levels[DEFAULT_LEVEL],
            calibration_rows=len(all_residuals),
            coverage_test=coverage[DEFAULT_LEVEL],
            levels=served_levels,
            coverage_test_levels={k: round(v, 4) for k, v in coverage.items()},
        )
    else:
        # The decision threshold from out-of-fold calibrated probabilities (validation only).
        assert sel.calibration is not None
        oof_proba = np.clip(sel.calibration(sel.oof[oof_ok]), 0, 1)
        threshold = evaluate.choose_threshold(y_seen[oof_ok], oof_proba)
        metrics = dict(evaluate.classification_metrics(y_test, pred_test, threshold))
        metrics["roc_auc_without_credits"] = evaluate.classification_metrics(
            y_test, pred_test_no_people, threshold
        )["roc_auc"]
        metrics["ece"] = evaluate.expected_calibration_error(y_test, pred_test)
        metrics["baseline_schema1_roc_auc"] = evaluate.classification_metrics(
            y_test, pred_baseline, 0.5
        )["roc_auc"]
        metrics["baseline_schema1_ece"] = evaluate.expected_calibration_error(y_test, pred_baseline)
        metrics["baseline_schema1_brier"] = evaluate.classification_metrics(
            y_test, pred_baseline, 0.5
        )["brier"]
        calibration_info = {
            **sel.calibration_report,
            "test_brier": metrics["brier"],
            "test_ece": metrics["ece"],
            "reliability": evaluate.reliability_table(y_test, pred_test),
        }

    importance, correlations, (corr_names, corr_matrix) = _explain_evaluation(
        task, evaluated, split.test, y_test
    )
    best = next(r for r in sel.results if r.spec == chosen) if chosen.family != "blend" else None
    evaluation = Evaluation(
        task=task,
        split=split,
        candidates=sel.candidates(),
        chosen=chosen,
        val_metrics={
            "cv_" + task.selection_metric: round(
                best.score if best is not None else float(sel.stacking["cv"]), 5
            ),
            "cv_folds": float(len(sel.folds)),
        },
        metrics=metrics,
        y_train=task.label(split.train),
        y_test=y_test,
        pred_test=pred_test,
        test_budget_known=test_budget,
        threshold=threshold,
        interval=interval_spec,
        importance=importance,
        correlations=correlations,
        corr_names=corr_names,
        corr_matrix=corr_matrix,
        selection={
            "features": sorted(config.groups),
            "ablation": sel.ablation,
            "stacking": sel.stacking,
            "recency": sel.recency,
            "search_space": sel.search_space,
            "folds": [{"train": len(f.train), "validation": len(f.validation)} for f in sel.folds],
        },
        calibration=calibration_info,
        pred_baseline=pred_baseline,
    )
    served = fit([*seen, *split.test]) if options.refit_all else evaluated
    return evaluation, served


def _explain_evaluation(
    task: Task, pipeline: Pipeline, test: Sequence[dict[str, Any]], y_test: Array
) -> tuple[dict[str, float], dict[str, float], tuple[list[str], Array]]:
    """Global field importance (mean |contribution| over test films: SHAP for tree models of
    schema 2, occlusion otherwise; the same numbers the API returns per film), each feature's
    correlation with the target on test, and the correlation matrix of the target with the
    most correlated features."""
    features: FilmFeatures = pipeline[0]
    X = features.transform(test)
    explainer: ShapExplainer | GroupOcclusion | None = ShapExplainer.build(pipeline)
    if explainer is None:
        explainer = GroupOcclusion(features.feature_groups_, features.reference_)
    _, contrib = explainer.contributions(
        X, pipeline_scorer(pipeline, task.kind == "classification")
    )
    importance = dict(
        sorted(
            zip(explainer.names, np.abs(contrib).mean(axis=0).tolist(), strict=True),
            key=lambda kv: -kv[1],
        )
    )
    correlations: dict[str, float] = {}
    for j, name in enumerate(features.feature_names_):
        col = X[:, j]
        ok = ~np.isnan(col)
        if ok.sum() > 10 and np.std(col[ok]) > 0 and np.std(y_test[ok]) > 0:
            correlations[name] = float(np.corrcoef(col[ok], y_test[ok])[0, 1])
    top = sorted(correlations, key=lambda k: -abs(correlations[k]))[:12]
    index = [features.feature_names_.index(n) for n in top]
    frame = np.column_stack([y_test, X[:, index]]) if index else y_test[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        # Pairwise over rows where both are known would be exact; column-mean filling keeps
        # it one call and is what the picture needs.
        filled = np.where(np.isnan(frame), np.nanmean(frame, axis=0), frame)
        matrix = np.corrcoef(filled, rowvar=False).reshape(len(index) + 1, len(index) + 1)
    return importance, correlations, (["target", *top], matrix)


# --- artifacts ---------------------------------------------------------------------------


def _explanation_method(pipeline: Pipeline) -> str:
    return "shap" if ShapExplainer.build(pipeline) is not None else "occlusion"


def git_sha() -> str | None:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def library_versions(with_mlflow: bool) -> dict[str, str]:
    # lightgbm: a candidate family since issue 14, so a served pickle may need it.
    names = ["scikit-learn", "numpy", "pandas", "joblib", "scipy", "pydantic", "lightgbm"]
    if with_mlflow:
        names.append("mlflow")
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _params(spec: CandidateSpec, pipeline: Pipeline, seed: int) -> dict[str, Any]:
    return {
        "family": spec.family,
        **spec.params,
        "people_dropout": PEOPLE_DROPOUT,
        "seed": seed,
        "features": {k: v for k, v in pipeline[0].get_params().items() if k != "schedule"},
        "estimator": type(pipeline.steps[-1][1]).__name__,
    }


def train_models(
    dataset: Dataset,
    artifacts_dir: Path,
    options: TrainOptions,
    say: Callable[[str], None] = print,
) -> list[TrainedModel]:
    """Train every requested model, write its version under `artifacts_dir`, activate it."""
    known = [*TASKS, ENGAGEMENT]
    unknown = set(options.models) - set(known)
    if unknown:
        raise ValueError(f"unknown model(s): {sorted(unknown)}; choose from {sorted(known)}")
    sha = git_sha()
    data_hash = dataset.content_hash()
    tracker = None
    if options.mlflow:
        from training.tracking import Tracker

        tracker = Tracker(options.tracking_uri, options.mlflow_dir, options.experiment)
    trained: list[TrainedModel] = []
    with threadpool_limits(limits=max(1, options.threads)):
        for name in options.models:
            if name == ENGAGEMENT:  # two outputs: its own recipe (training/engagement.py)
                trained.append(
                    train_engagement(
                        dataset.records,
                        dataset.source,
                        artifacts_dir,
                        options,
                        data_hash=data_hash,
                        sha=sha,
                        libraries=library_versions(tracker is not None),
                        input_fields=INPUT_FIELDS,
                        tracker=tracker,
                        say=say,
                    )
                )
                continue
            task = TASKS[name]
            started = time.perf_counter()
            say(f"{name}: {dataset.size} films from {dataset.source}")
            evaluation, pipeline = evaluate_task(task, dataset.records, options, say)
            trained.append(
                _write_version(
                    task,
                    evaluation,
                    pipeline,
                    dataset,
                    data_hash,
                    sha,
                    artifacts_dir,
                    options,
                    tracker,
                    started,
                    say,
                )
            )
    return trained


def _write_version(
    task: Task,
    ev: Evaluation,
    pipeline: Pipeline,
    dataset: Dataset,
    data_hash: str,
    sha: str | None,
    artifacts_dir: Path,
    options: TrainOptions,
    tracker: Any,
    started: float,
    say: Callable[[str], None],
) -> TrainedModel:
    base = artifacts.model_dir(artifacts_dir, task.name)
    base.mkdir(parents=True, exist_ok=True)
    version = artifacts.new_version(artifacts_dir, task.name)
    staging = base / f".staging-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        model_path = staging / artifacts.MODEL_FILE
        joblib.dump(pipeline, model_path, compress=3)
        features: FilmFeatures = pipeline[0]
        n_rows = ev.split.info.train + ev.split.info.validation + ev.split.info.test
        card = ModelCard(
            name=task.name,
            version=version,
            created_at=datetime.now(UTC),
            task=task.kind,
            target=task.target,
            git_sha=sha,
            data=DataInfo(
                source=dataset.source,
                sha256=data_hash,
                films=dataset.size,
                rows=n_rows,
                split=ev.split.info,
            ),
            feature_schema_version=features.schema_version,
            input_fields=INPUT_FIELDS,
            features=features.feature_schema(),
            family=ev.chosen.family,
            params=_params(ev.chosen, pipeline, options.seed),
            candidates=ev.candidates,
            validation_metrics=ev.val_metrics,
            metrics=ev.metrics,
            interval=ev.interval,
            threshold=ev.threshold,
            final_fit=(
                f"all {n_rows} films (train+validation+test) with the chosen settings"
                if options.refit_all
                else f"train+validation ({ev.split.info.train + ev.split.info.validation} films)"
            ),
            library_versions=library_versions(tracker is not None),
            artifact=ArtifactInfo(
                file=artifacts.MODEL_FILE,
                sha256=artifacts.sha256_file(model_path),
                bytes=model_path.stat().st_size,
            ),
            training_seconds=0.0,
            selection=ev.selection,
            calibration=ev.calibration,
            explanations=_explanation_method(pipeline),
        )
        fitted_on = [*ev.split.train, *ev.split.validation]
        if options.refit_all:
            fitted_on.extend(ev.split.test)
        card.profile = _write_profile(task, pipeline, fitted_on, staging, options.seed)
        report_path = staging / artifacts.REPORT_FILE
        if options.report:
            from training.report import write_report

            write_report(report_path, card, ev)
        if tracker is not None:
            card.mlflow = tracker.log(task, card, ev, pipeline, staging, fitted_on)
        card.training_seconds = round(time.perf_counter() - started, 2)
        (staging / artifacts.CARD_FILE).write_text(card.model_dump_json(indent=2), encoding="utf-8")
        final = artifacts.version_dir(artifacts_dir, task.name, version)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if options.activate:
        artifacts.write_active(artifacts_dir, task.name, version)
        if tracker is not None and card.mlflow is not None:
            tracker.set_champion(card.mlflow, options.activated_by)
    say(f"{task.name}: wrote {final} ({_summary(card)})" + (", active" if options.activate else ""))
    return TrainedModel(task.name, version, final, card, options.activate)


def _write_profile(
    task: Task, pipeline: Pipeline, records: Sequence[dict[str, Any]], staging: Path, seed: int
) -> ProfileInfo:
    """The reference profile of the served model: its monitored inputs and its output over
    the films it was fitted on, as the service computes them for a request (no dropout)."""
    features: FilmFeatures = pipeline[0]
    X = features.transform(records)
    scores = pipeline_scorer(pipeline, task.kind == "classification")(X)
    rows = InputReader(features.feature_names_).rows(X, records)
    path = staging / PROFILE_FILE
    path.write_bytes(orjson.dumps(build_profile(rows, scores, seed)))
    return ProfileInfo(file=PROFILE_FILE, sha256=artifacts.sha256_file(path), films=len(records))


def _summary(card: ModelCard) -> str:
    m = card.metrics
    if card.task == "regression":
        return (
            f"{card.family}: test RMSLE {m['rmsle']:.3f}, R2(log) {m['r2_log']:.3f}, "
            f"interval coverage {m['interval_coverage']:.2f}"
        )
    return f"{card.family}: test ROC AUC {m['roc_auc']:.3f}, F1 {m['f1']:.3f}"
