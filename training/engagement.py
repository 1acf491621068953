"""Train, compare, evaluate and save the `engagement` model: from pre-release facts, the number
of TMDB votes a film gathers (log1p(vote_count)) and the rating it reaches (vote_average of
films with at least `MIN_RATED_VOTES` votes).

The recipe is the revenue model's (`training.train`): one time split of the films with a
known vote count; each output's estimator chosen on validation among a small grid; the
audience track-record features kept only if they improve validation (the ablation is in the
card); one fit on train+validation scored once on test against a naive baseline (the median
of the same primary genre over the five years up to the film's year); split-conformal 80%
intervals per output (Mondrian by budget known/unknown), their coverage measured on test at
50/80/95%; then the served model fitted on every film. Artifact, card, report and MLflow
run as for the other models.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import numpy.typing as npt
import orjson
from scipy.stats import spearmanr
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from app.ml import artifacts
from app.ml.card import (
    ArtifactInfo,
    Candidate,
    DataInfo,
    IntervalSpec,
    ModelCard,
    OutputSpec,
    ProfileInfo,
)
from app.ml.drift import PROFILE_FILE, InputReader, build_profile
from app.ml.engagement import (
    MIN_RATED_VOTES,
    OUTPUTS,
    RATING_RANGE,
    EngagementFeatures,
    EngagementRegressor,
    outcome,
)
from app.ml.estimators import fit_weighted
from app.ml.explain import GroupOcclusion
from app.ml.features import FEATURE_SCHEMA_VERSION
from training import evaluate
from training.candidates import (
    PEOPLE_DROPOUT,
    QUICK_HALF_LIVES,
    RECENCY_HALF_LIVES,
    recency_weights,
)
from training.engagement_report import render_report
from training.engagement_types import EngagementEvaluation, OutputResult, Spec
from training.split import random_split, time_split
from training.types import TrainedModel, TrainOptions

ENGAGEMENT = "engagement"
NAN = float("nan")
Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Records = Sequence[dict[str, Any]]
SELECTION = {"vote_count": "rmsle", "vote_average": "rmse"}  # lower is better for both
SERVED_LEVEL = 0.8  # the interval the API returns
COVERAGE_LEVELS = (0.5, 0.8, 0.95)
BASELINE_YEARS = 5  # the baseline's window: same primary genre, this many years up to the film's
BASELINE_MIN_FILMS = 5
TARGET = (
    f"vote_count: log1p(TMDB vote count), every film with a known count; vote_average: TMDB "
    f"rating (0-10) of films with at least {MIN_RATED_VOTES} votes"
)


def grid(quick: bool) -> list[Spec]:
    """A small grid per family, as for the revenue model (same families, same reasoning)."""
    if quick:
        return [
            Spec("ridge", {"alpha": 30.0}),
            Spec("random_forest", {"n_estimators": 30, "min_samples_leaf": 5}),
            Spec(
                "hist_gradient_boosting",
                {"max_iter": 40, "learning_rate": 0.1, "max_leaf_nodes": 7},
            ),
        ]
    return [
        # The rating is noisy: strong ridge penalties belong in the grid (on the TMDB 5000 films
        # 300 wins and 3000 is worse, so the optimum lies inside it).
        *(Spec("ridge", {"alpha": a}) for a in (3.0, 30.0, 300.0, 3000.0)),
        Spec("random_forest", {"n_estimators": 200, "min_samples_leaf": 5, "max_features": 0.3}),
        Spec(
            "hist_gradient_boosting",
            {
                "max_iter": 300,
                "learning_rate": 0.05,
                "max_leaf_nodes": 15,
                "min_samples_leaf": 20,
                "l2_regularization": 1.0,
            },
        ),
        Spec(
            "hist_gradient_boosting",
            {
                "max_iter": 400,
                "learning_rate": 0.03,
                "max_leaf_nodes": 7,
                "min_samples_leaf": 40,
                "l2_regularization": 5.0,
            },
        ),
    ]


def build_estimator(spec: Spec, seed: int) -> Any:
    p = dict(spec.params)
    if spec.family == "ridge":
        # Medians and missing indicators: a linear model cannot route NaN as trees do.
        return Pipeline(
            [
                ("impute", SimpleImputer(strategy="median", add_indicator=True)),
                ("scale", StandardScaler()),
                ("model", Ridge(**p)),
            ]
        )
    if spec.family == "random_forest":
        return RandomForestRegressor(**{"max_features": 0.3, **p}, n_jobs=1, random_state=seed)
    if spec.family == "hist_gradient_boosting":
        return HistGradientBoostingRegressor(**p, early_stopping=False, random_state=seed)
    raise ValueError(f"unknown model family {spec.family!r}")


def features(vote_history: bool, seed: int) -> EngagementFeatures:
    return EngagementFeatures(
        vote_history=vote_history, people_dropout=PEOPLE_DROPOUT, random_state=seed
    )


def build_pipeline(chosen: dict[str, Spec], vote_history: bool, seed: int) -> Pipeline:
    return Pipeline(
        [
            ("features", features(vote_history, seed)),
            (
                "model",
                EngagementRegressor(
                    vote_count=build_estimator(chosen["vote_count"], seed),
                    vote_average=build_estimator(chosen["vote_average"], seed),
                ),
            ),
        ]
    )


# --- data ---------------------------------------------------------------------------------------


def population(records: Records) -> list[dict[str, Any]]:
    """Films with a known vote count (the rating is known for those with enough votes)."""
    return [r for r in records if outcome(r)[0] is not None]


def targets(records: Records) -> Array:
    """(n, 2): raw vote count, and the rating where it counts (NaN elsewhere)."""
    rows = []
    for r in records:
        log_votes, rating = outcome(r)
        assert log_votes is not None
        rows.append((math.expm1(log_votes), NAN if rating is None else rating))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2)


@dataclass
class Labels:
    """One part of the split in the units each estimator works in."""

    Y: Array  # raw (votes, rating)
    log_votes: Array
    rating: Array
    rated: BoolArray
    budget_known: BoolArray

    @classmethod
    def of(cls, records: Records) -> Labels:
        Y = targets(records)
        return cls(
            Y=Y,
            log_votes=np.log1p(Y[:, 0]),
            rating=Y[:, 1],
            rated=np.isfinite(Y[:, 1]),
            budget_known=np.asarray([r.get("budget") is not None for r in records], dtype=bool),
        )

    def output(self, name: str) -> tuple[Array, BoolArray]:
        """(truth, rows where it is known) of one output."""
        if name == "vote_count":
            return self.log_votes, np.ones(len(self.log_votes), dtype=bool)
        return self.rating, self.rated


def _primary_genre(rec: dict[str, Any]) -> str | None:
    genres = rec.get("genres") or []
    return str(genres[0]) if genres else None


def _year(rec: dict[str, Any]) -> int | None:
    released = rec.get("release_date")
    return int(str(released)[:4]) if released else None


def genre_year_baseline(train: Records, values: Array, known: BoolArray, test: Records) -> Array:
    """The naive forecast: the median of training films of the same primary genre released
    in the `BASELINE_YEARS` years up to the film's year; with fewer than
    `BASELINE_MIN_FILMS` such films, the genre's median over all years; else the overall
    median."""
    by_genre: dict[str | None, list[tuple[int | None, float]]] = {}
    for rec, value, ok in zip(train, values.tolist(), known.tolist(), strict=True):
        if ok:
            by_genre.setdefault(_primary_genre(rec), []).append((_year(rec), value))
    overall = float(np.median(values[known]))
    out = []
    for rec in test:
        films = by_genre.get(_primary_genre(rec), [])
        year = _year(rec)
        window = (
            [v for y, v in films if y is not None and year - BASELINE_YEARS < y <= year]
            if year is not None
            else []
        )
        if len(window) >= BASELINE_MIN_FILMS:
            out.append(statistics.median(window))
        elif films:
            out.append(statistics.median(v for _, v in films))
        else:
            out.append(overall)
    return np.asarray(out, dtype=np.float64)


# --- metrics ------------------------------------------------------------------------------------


def _spearman(a: Array, b: Array) -> float:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def count_metrics(y_log: Array, pred_log: Array) -> dict[str, float]:
    """On log1p votes (what the model fits) and in votes (what a reader understands)."""
    m = evaluate.regression_metrics(y_log, pred_log)
    votes = np.abs(np.expm1(pred_log) - np.expm1(y_log))
    return {
        "rmsle": m["rmsle"],
        "r2_log": m["r2_log"],
        "mae_votes": float(votes.mean()),
        "median_ae_votes": float(np.median(votes)),
        "spearman": _spearman(y_log, pred_log),
        "n": float(len(y_log)),
    }


def rating_metrics(y: Array, pred: Array) -> dict[str, float]:
    err = pred - y
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "rmse": math.sqrt(float(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "r2": 1 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else float("nan"),
        "spearman": _spearman(y, pred),
        "n": float(len(y)),
    }


def _metrics(name: str, y: Array, pred: Array) -> dict[str, float]:
    return count_metrics(y, pred) if name == "vote_count" else rating_metrics(y, pred)


def _quantiles(level: float) -> tuple[float, float]:
    return (round((1 - level) / 2, 4), round(1 - (1 - level) / 2, 4))


SERVED_QUANTILES = _quantiles(SERVED_LEVEL)


# --- evaluation ---------------------------------------------------------------------------------


def _fit_features(
    vote_history: bool, seed: int, train: Records, others: Sequence[Records]
) -> tuple[Array, list[Array]]:
    step = features(vote_history, seed)
    X_train = step.fit_transform(train)
    return X_train, [step.transform(o) for o in others]


def _select(
    name: str,
    specs: list[Spec],
    X_train: Array,
    X_val: Array,
    train: Labels,
    val: Labels,
    seed: int,
    say: Callable[[str], None],
) -> tuple[Spec, list[Candidate], Array]:
    y_train, known_train = train.output(name)
    y_val, known_val = val.output(name)
    metric = SELECTION[name]
    results: list[Candidate] = []
    best: tuple[Spec, float, Array] | None = None
    for spec in specs:
        started = time.perf_counter()
        model = build_estimator(spec, seed).fit(X_train[known_train], y_train[known_train])
        pred = np.asarray(model.predict(X_val), dtype=np.float64)
        scores = _metrics(name, y_val[known_val], pred[known_val])
        seconds = time.perf_counter() - started
        chosen = {metric: scores[metric], "spearman": scores["spearman"]}
        results.append(
            Candidate(
                family=f"{name}:{spec.family}",
                params=spec.params,
                validation=chosen,
                fit_seconds=seconds,
            )
        )
        say(f"  engagement {name} {spec.family} {spec.params}: {metric}={scores[metric]:.4f}")
        if best is None or scores[metric] < best[1]:
            best = (spec, scores[metric], pred)
    assert best is not None
    return best[0], results, best[2]


def _val_predictions(
    chosen: dict[str, Spec], X_train: Array, X_val: Array, train: Labels, seed: int
) -> dict[str, Array]:
    out = {}
    for name in OUTPUTS:
        y, known = train.output(name)
        model = build_estimator(chosen[name], seed).fit(X_train[known], y[known])
        out[name] = np.asarray(model.predict(X_val), dtype=np.float64)
    return out


def _try_recency(
    name: str,
    spec: Spec,
    X_train: Array,
    X_val: Array,
    train_records: Records,
    train: Labels,
    val: Labels,
    unweighted: Array,
    half_lives: Sequence[float | None],
    seed: int,
    say: Callable[[str], None],
) -> tuple[float | None, Array, dict[str, Any]]:
    """The output's chosen estimator refitted with recency weights (weights that halve every
    `half_life` years of a film's age, `training.candidates.recency_weights`): the half-life
    with the best validation score, None (unweighted, `unweighted` its predictions) unless
    one beats it. Returns (half-life, its validation predictions, the report)."""
    y_train, known_train = train.output(name)
    y_val, known_val = val.output(name)
    metric = SELECTION[name]

    def score(pred: Array) -> float:
        return _metrics(name, y_val[known_val], pred[known_val])[metric]

    scores = {"none": score(unweighted)}
    best: tuple[float | None, float, Array] = (None, scores["none"], unweighted)
    for half_life in half_lives:
        weights = recency_weights(train_records, half_life)
        if half_life is None or weights is None:
            continue
        model = fit_weighted(
            build_estimator(spec, seed),
            X_train[known_train],
            y_train[known_train],
            weights[known_train],
        )
        pred = np.asarray(model.predict(X_val), dtype=np.float64)
        scores[f"{half_life:g}"] = score(pred)
        if scores[f"{half_life:g}"] < best[1]:
            best = (half_life, scores[f"{half_life:g}"], pred)
    by_half_life = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
    say(
        f"  engagement {name} recency weights: half-life {best[0]} "
        f"(validation {metric} by half-life: {by_half_life})"
    )
    return best[0], best[2], {"half_life": best[0], f"validation_{metric}": scores}


def recency_fit_params(records: Records, half_lives: dict[str, float | None]) -> dict[str, Any]:
    """`Pipeline.fit` keyword arguments giving each output its recency weights over
    `records` (none when every output is unweighted)."""
    columns = [recency_weights(records, half_lives.get(name)) for name in OUTPUTS]
    if all(c is None for c in columns):
        return {}
    ones = np.ones(len(records))
    return {"model__sample_weight": np.column_stack([ones if c is None else c for c in columns])}


def _relative_gain(name: str, val: Labels, with_: Array, without: Array) -> float:
    y, known = val.output(name)
    metric = SELECTION[name]
    a = _metrics(name, y[known], with_[known])[metric]
    b = _metrics(name, y[known], without[known])[metric]
    return (b - a) / b if b > 0 else 0.0


def evaluate_engagement(
    records: Records, options: TrainOptions, say: Callable[[str], None]
) -> tuple[EngagementEvaluation, Pipeline]:
    films = population(records)
    if len(films) < 30:
        raise ValueError(f"engagement: only {len(films)} films with a known vote count")
    split = time_split(films) if options.split == "time" else random_split(films, options.seed)
    train, val, test = (Labels.of(part) for part in (split.train, split.validation, split.test))
    if not train.rated.any() or not val.rated.any() or not test.rated.any():
        raise ValueError(
            f"engagement: every part of the split needs films with {MIN_RATED_VOTES}+ votes"
        )
    seed = options.seed

    # Each output's estimator, chosen on validation with the full feature set.
    X_train, (X_val,) = _fit_features(True, seed, split.train, [split.validation])
    specs = grid(options.quick)
    chosen: dict[str, Spec] = {}
    candidates: list[Candidate] = []
    val_with: dict[str, Array] = {}
    for name in OUTPUTS:
        spec, results, pred = _select(name, specs, X_train, X_val, train, val, seed, say)
        chosen[name], val_with[name] = spec, pred
        candidates += results

    # Ablation: the audience track record stays only if it helps validation on balance.
    Xn_train, (Xn_val,) = _fit_features(False, seed, split.train, [split.validation])
    val_without = _val_predictions(chosen, Xn_train, Xn_val, train, seed)
    gains = {n: _relative_gain(n, val, val_with[n], val_without[n]) for n in OUTPUTS}
    vote_history = sum(gains.values()) > 0
    val_pred = val_with if vote_history else val_without
    ablation: dict[str, float] = {}
    for name in OUTPUTS:
        y, known = val.output(name)
        metric = SELECTION[name]
        ablation[f"{name}_{metric}_with_vote_history"] = _metrics(
            name, y[known], val_with[name][known]
        )[metric]
        ablation[f"{name}_{metric}_without_vote_history"] = _metrics(
            name, y[known], val_without[name][known]
        )[metric]
    say(
        "  engagement vote history "
        + ("kept" if vote_history else "dropped")
        + ": "
        + ", ".join(f"{k}={v:+.3f}" for k, v in gains.items())
    )

    # Recency weights, per output, for its chosen estimator on the kept features: the
    # audience drifts with release years as the box office does.
    X_fit, X_check = (X_train, X_val) if vote_history else (Xn_train, Xn_val)
    val_pred = dict(val_pred)
    half_lives: dict[str, float | None] = {}
    recency: dict[str, Any] = {}
    for name in OUTPUTS:
        half_lives[name], val_pred[name], recency[name] = _try_recency(
            name,
            chosen[name],
            X_fit,
            X_check,
            split.train,
            train,
            val,
            val_pred[name],
            QUICK_HALF_LIVES if options.quick else RECENCY_HALF_LIVES,
            seed,
            say,
        )
    val_metrics = {}
    for name in OUTPUTS:
        y, known = val.output(name)
        metric = SELECTION[name]
        val_metrics[f"{name}_{metric}"] = _metrics(name, y[known], val_pred[name][known])[metric]

    # One fit on train+validation, one look at test.
    seen = [*split.train, *split.validation]
    seen_labels = Labels.of(seen)
    evaluated = build_pipeline(chosen, vote_history, seed).fit(
        seen, seen_labels.Y, **recency_fit_params(seen, half_lives)
    )
    pred_test_all = np.asarray(evaluated.predict(split.test), dtype=np.float64)
    pred_no_people = np.asarray(
        evaluated.predict([{**r, "directors": [], "actors": []} for r in split.test]),
        dtype=np.float64,
    )
    importance = _importance(evaluated, split.test)
    outputs: dict[str, OutputResult] = {}
    metrics: dict[str, Any] = {}
    for k, name in enumerate(OUTPUTS):
        y_test, known_test = test.output(name)
        y_val, known_val = val.output(name)
        pred = pred_test_all[known_test, k]
        truth = y_test[known_test]
        y_seen, known_seen = seen_labels.output(name)
        baseline = genre_year_baseline(
            seen,
            y_seen,
            known_seen,
            [r for r, ok in zip(split.test, known_test, strict=True) if ok],
        )
        model_m = _metrics(name, truth, pred)
        base_m = _metrics(name, truth, baseline)
        val_res = y_val[known_val] - val_pred[name][known_val]
        val_budget = val.budget_known[known_val]
        test_budget = test.budget_known[known_test]
        out: dict[str, Any] = dict(model_m)
        out["baseline"] = base_m
        metric = SELECTION[name]
        out[f"{metric}_gain_vs_baseline"] = base_m[metric] - model_m[metric]
        out[f"{metric}_without_credits"] = _metrics(name, truth, pred_no_people[known_test, k])[
            metric
        ]
        coverage = {}
        for level in COVERAGE_LEVELS:
            offsets = evaluate.fit_interval(val_res, val_budget, _quantiles(level))
            coverage[f"{int(level * 100)}"] = evaluate.interval_coverage(
                truth, pred, test_budget, offsets
            )
        out["interval_coverage"] = coverage[f"{int(SERVED_LEVEL * 100)}"]
        out["coverage_by_level"] = coverage
        # Served offsets: every held-out residual (validation from the train fit, test
        # from the train+validation fit); the coverage above used validation only.
        residuals = np.concatenate([val_res, truth - pred])
        budget = np.concatenate([val_budget, test_budget])
        interval = IntervalSpec(
            method=f"split conformal on {'log1p(vote_count)' if k == 0 else 'vote_average'}, "
            "Mondrian by budget known/unknown",
            quantiles=SERVED_QUANTILES,
            offsets=evaluate.fit_interval(residuals, budget, SERVED_QUANTILES),
            calibration_rows=len(residuals),
            coverage_test=out["interval_coverage"],
        )
        metrics[name] = out
        outputs[name] = OutputResult(
            name=name,
            y_test=truth,
            pred_test=pred,
            baseline_test=baseline,
            budget_known=test_budget,
            metrics=model_m,
            interval=interval,
            importance=importance[name],
        )
        say(
            f"  engagement {name}: test {metric} {model_m[metric]:.4f} "
            f"(baseline {base_m[metric]:.4f}), 80% coverage {out['interval_coverage']:.3f}"
        )
    metrics["vote_history_ablation"] = ablation
    metrics["vote_history"] = vote_history
    metrics["recency"] = recency
    evaluation = EngagementEvaluation(
        split=split,
        candidates=candidates,
        chosen=chosen,
        vote_history=vote_history,
        ablation=ablation,
        val_metrics=val_metrics,
        metrics=metrics,
        outputs=outputs,
    )
    if options.refit_all:
        everything = [*seen, *split.test]
        served = build_pipeline(chosen, vote_history, seed).fit(
            everything, Labels.of(everything).Y, **recency_fit_params(everything, half_lives)
        )
    else:
        served = evaluated
    return evaluation, served


def _importance(pipeline: Pipeline, test: Records) -> dict[str, dict[str, float]]:
    """Per output: mean |occlusion contribution| of each input field over the test films
    (the method `explain=true` uses for the other models)."""
    step: EngagementFeatures = pipeline[0]
    X = step.transform(test)
    occlusion = GroupOcclusion(step.feature_groups_, step.reference_)
    tail = pipeline[1:]
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(OUTPUTS):

        def score(M: Array, k: int = k) -> Array:
            return np.asarray(tail.predict(M)[:, k], dtype=np.float64)

        _, contrib = occlusion.contributions(X, score)
        values = np.abs(contrib).mean(axis=0).tolist()
        out[name] = dict(sorted(zip(occlusion.names, values, strict=True), key=lambda kv: -kv[1]))
    return out


# --- artifacts ----------------------------------------------------------------------------------


def _card(
    ev: EngagementEvaluation,
    pipeline: Pipeline,
    version: str,
    dataset_source: str,
    films: int,
    data_hash: str,
    sha: str | None,
    libraries: dict[str, str],
    options: TrainOptions,
    model_path: Path,
    input_fields: list[str],
) -> ModelCard:
    step: EngagementFeatures = pipeline[0]
    info = ev.split.info
    n_rows = info.train + info.validation + info.test
    return ModelCard(
        name=ENGAGEMENT,
        version=version,
        created_at=datetime.now(UTC),
        task="multi_regression",
        target=TARGET,
        git_sha=sha,
        data=DataInfo(
            source=dataset_source, sha256=data_hash, films=films, rows=n_rows, split=info
        ),
        feature_schema_version=FEATURE_SCHEMA_VERSION,
        input_fields=input_fields,
        features=step.feature_schema(),
        family="; ".join(f"{n}: {ev.chosen[n].family}" for n in OUTPUTS),
        params={
            **{
                n: {
                    "family": ev.chosen[n].family,
                    **ev.chosen[n].params,
                    "recency_half_life_years": ev.metrics["recency"][n]["half_life"],
                }
                for n in OUTPUTS
            },
            "vote_history": ev.vote_history,
            "min_rated_votes": MIN_RATED_VOTES,
            "people_dropout": PEOPLE_DROPOUT,
            "seed": options.seed,
            "baseline": f"median of the same primary genre over the {BASELINE_YEARS} years up "
            "to the film's year (else the genre's, else everyone's)",
        },
        candidates=ev.candidates,
        validation_metrics=ev.val_metrics,
        metrics=ev.metrics,
        outputs={
            "vote_count": OutputSpec(
                target="TMDB vote count",
                transform="log1p",
                bounds=(0.0, None),
                interval=ev.outputs["vote_count"].interval,
            ),
            "vote_average": OutputSpec(
                target=f"TMDB rating once the film has {MIN_RATED_VOTES}+ votes",
                transform="identity",
                bounds=RATING_RANGE,
                interval=ev.outputs["vote_average"].interval,
            ),
        },
        final_fit=(
            f"all {n_rows} films (train+validation+test) with the chosen settings"
            if options.refit_all
            else f"train+validation ({info.train + info.validation} films)"
        ),
        library_versions=libraries,
        artifact=ArtifactInfo(
            file=artifacts.MODEL_FILE,
            sha256=artifacts.sha256_file(model_path),
            bytes=model_path.stat().st_size,
        ),
        training_seconds=0.0,
    )


def _write_profile(pipeline: Pipeline, records: Records, staging: Path, seed: int) -> ProfileInfo:
    """The reference profile drift is measured against: the monitored inputs over the films
    the served model was fitted on, and its first output (log1p votes), as served."""
    engagement_features: EngagementFeatures = pipeline[0]
    X = engagement_features.transform(records)
    scores = np.asarray(pipeline[-1].predict(X), dtype=np.float64)[:, 0]
    rows = InputReader(engagement_features.feature_names_).rows(X, records)
    path = staging / PROFILE_FILE
    path.write_bytes(orjson.dumps(build_profile(rows, scores, seed)))
    return ProfileInfo(file=PROFILE_FILE, sha256=artifacts.sha256_file(path), films=len(records))


def train_engagement(
    records: Records,
    source: str,
    artifacts_dir: Path,
    options: TrainOptions,
    *,
    data_hash: str,
    sha: str | None,
    libraries: dict[str, str],
    input_fields: list[str],
    tracker: Any,
    say: Callable[[str], None],
) -> TrainedModel:
    """Evaluate, fit and write one engagement version (as `training.train` does for the
    others: a staging directory renamed into place, then `ACTIVE`)."""
    started = time.perf_counter()
    say(f"{ENGAGEMENT}: {len(records)} films from {source}")
    ev, pipeline = evaluate_engagement(records, options, say)
    base = artifacts.model_dir(artifacts_dir, ENGAGEMENT)
    base.mkdir(parents=True, exist_ok=True)
    version = artifacts.new_version(artifacts_dir, ENGAGEMENT)
    staging = base / f".staging-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        model_path = staging / artifacts.MODEL_FILE
        joblib.dump(pipeline, model_path, compress=3)
        card = _card(
            ev,
            pipeline,
            version,
            source,
            len(records),
            data_hash,
            sha,
            libraries,
            options,
            model_path,
            input_fields,
        )
        fitted_on = [*ev.split.train, *ev.split.validation]
        if options.refit_all:
            fitted_on.extend(ev.split.test)
        card.profile = _write_profile(pipeline, fitted_on, staging, options.seed)
        if options.report:
            (staging / artifacts.REPORT_FILE).write_text(render_report(card, ev), encoding="utf-8")
        if tracker is not None:
            card.mlflow = tracker.log_run(ENGAGEMENT, "predict", card, pipeline, staging, records)
        card.training_seconds = round(time.perf_counter() - started, 2)
        (staging / artifacts.CARD_FILE).write_text(card.model_dump_json(indent=2), encoding="utf-8")
        final = artifacts.version_dir(artifacts_dir, ENGAGEMENT, version)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if options.activate:
        artifacts.write_active(artifacts_dir, ENGAGEMENT, version)
        if tracker is not None and card.mlflow is not None:
            tracker.set_champion(card.mlflow, options.activated_by)
    m = ev.metrics
    say(
        f"{ENGAGEMENT}: wrote {final} ({card.family}: vote_count RMSLE "
        f"{m['vote_count']['rmsle']:.3f} vs baseline {m['vote_count']['baseline']['rmsle']:.3f}, "
        f"vote_average RMSE {m['vote_average']['rmse']:.3f} vs baseline "
        f"{m['vote_average']['baseline']['rmse']:.3f})" + (", active" if options.activate else "")
    )
    return TrainedModel(ENGAGEMENT, version, final, card, options.activate)
