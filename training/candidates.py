"""The two prediction tasks and the model families compared for each.

Every candidate is a full `Pipeline(FilmFeatures -> [impute -> scale ->] estimator)`, so the
object that is evaluated is exactly the object that is saved and served.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from app.ml.estimators import AveragedRegressor, CalibratedHit, Calibration, ConstantDollarRegressor
from app.ml.features import FilmFeatures
from app.ml.prerelease import PreReleaseFeatures
from app.ml.targets import is_hit

Records = Sequence[dict[str, Any]]
Array = npt.NDArray[np.float64]

# Share of training films whose director/cast are hidden while fitting (see FilmFeatures):
# clients often send no credits, and the model must then behave like "credits unknown",
# not like "one of the few obscure films IMDB did not list". Chosen on validation: 0.3
# costs ~0.01 RMSLE with credits and saves ~0.2-0.3 without them.
PEOPLE_DROPOUT = 0.3


@dataclass(frozen=True)
class CandidateSpec:
    family: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Task:
    name: Literal["revenue", "hit"]
    kind: Literal["regression", "classification"]
    target: str
    selection_metric: str
    higher_is_better: bool
    population: Callable[[dict[str, Any]], bool]
    label: Callable[[Records], Array]


def _has_revenue(rec: dict[str, Any]) -> bool:
    return rec.get("revenue") is not None


def _has_budget_and_revenue(rec: dict[str, Any]) -> bool:
    return rec.get("revenue") is not None and rec.get("budget") is not None


def log_revenue(records: Records) -> Array:
    return np.log1p(np.asarray([float(r["revenue"]) for r in records], dtype=np.float64))


def hit_label(records: Records) -> Array:
    return np.asarray([float(is_hit(r["revenue"], r["budget"])) for r in records], dtype=np.float64)


REVENUE = Task(
    name="revenue",
    kind="regression",
    target="log1p(worldwide revenue in USD); films with a known revenue",
    selection_metric="rmsle",
    higher_is_better=False,
    population=_has_revenue,
    label=log_revenue,
)
HIT = Task(
    name="hit",
    kind="classification",
    target="hit = worldwide revenue >= 2 x budget; films with both known",
    selection_metric="roc_auc",
    higher_is_better=True,
    population=_has_budget_and_revenue,
    label=hit_label,
)
TASKS: dict[str, Task] = {t.name: t for t in (REVENUE, HIT)}


# Schema-2 feature groups in the order the ablation tries them (see training.selection).
FEATURE_GROUPS = ("content_rating", "franchise", "text", "release_context", "constant_dollars")
TEXT_COMPONENTS = 20
TEXT_DROPOUT = PEOPLE_DROPOUT  # clients often send no overview either


@dataclass(frozen=True)
class FeatureConfig:
    """Which schema-2 groups a pipeline's features use (all off: schema-1 columns only)."""

    groups: frozenset[str] = frozenset()

    def with_group(self, group: str) -> FeatureConfig:
        return FeatureConfig(self.groups | {group})

    def label(self) -> str:
        return "+".join(g for g in FEATURE_GROUPS if g in self.groups) or "base"


# The search space per family (full mode). Quick mode takes the first entry of each.
SEARCH_SPACE: dict[str, list[dict[str, Any]]] = {
    "linear": [{"strength": v} for v in (1.0, 0.1, 10.0)],
    "random_forest": [
        {"n_estimators": 200, "min_samples_leaf": 3, "max_features": 0.3},
        {"n_estimators": 200, "min_samples_leaf": 8, "max_features": 0.2},
    ],
    "hist_gradient_boosting": [
        {
            "max_iter": 400,
            "learning_rate": 0.03,
            "max_leaf_nodes": 7,
            "min_samples_leaf": 40,
            "l2_regularization": 5.0,
        },
        {
            "max_iter": 500,
            "learning_rate": 0.03,
            "max_leaf_nodes": 7,
            "min_samples_leaf": 40,
            "l2_regularization": 5.0,
            "max_features": 0.5,
        },
        {
            "max_iter": 300,
            "learning_rate": 0.05,
            "max_leaf_nodes": 15,
            "min_samples_leaf": 20,
            "l2_regularization": 1.0,
        },
    ],
    "lightgbm": [
        {
            "n_estimators": 800,
            "learning_rate": 0.01,
            "num_leaves": 7,
            "min_child_samples": 50,
            "subsample": 0.7,
            "colsample_bytree": 0.3,
            "reg_lambda": 10.0,
        },
        {
            "n_estimators": 400,
            "learning_rate": 0.03,
            "num_leaves": 15,
            "min_child_samples": 20,
            "subsample": 0.8,
            "colsample_bytree": 0.5,
            "reg_lambda": 1.0,
        },
    ],
}
QUICK_PARAMS: dict[str, dict[str, Any]] = {
    "linear": {"strength": 1.0},
    "random_forest": {"n_estimators": 30, "min_samples_leaf": 5, "max_features": 0.3},
    "hist_gradient_boosting": {"max_iter": 40, "learning_rate": 0.1, "max_leaf_nodes": 7},
    "lightgbm": {
        "n_estimators": 40,
        "learning_rate": 0.1,
        "num_leaves": 7,
        "min_child_samples": 20,
    },
}
# A reference model for the feature ablation (the first HGB setting: the old default winner).
ABLATION_FAMILY = "hist_gradient_boosting"


def families(task: Task) -> list[str]:
    """Model families compared for a task. For `hit`, the `*_roi` families regress the log ROI
    (log1p revenue - log1p budget) and calibrate it into P(hit >= 2x budget)."""
    linear = "ridge" if task.kind == "regression" else "logistic_regression"
    out = [linear, "random_forest", "hist_gradient_boosting", "lightgbm"]
    if task.kind == "classification":
        out += ["hist_gradient_boosting_roi", "lightgbm_roi"]
    return out


def _space(family: str) -> str:
    base = family.removesuffix("_roi")
    return "linear" if base in ("ridge", "logistic_regression") else base


def candidates(task: Task, quick: bool) -> list[CandidateSpec]:
    """Every (family, settings) pair the search compares: the search space of SEARCH_SPACE,
    or one small setting per family in quick mode (tests, smoke runs)."""
    out: list[CandidateSpec] = []
    for family in families(task):
        grid = [QUICK_PARAMS[_space(family)]] if quick else SEARCH_SPACE[_space(family)]
        out.extend(CandidateSpec(family, dict(p)) for p in grid)
    return out


def ablation_candidate(quick: bool) -> CandidateSpec:
    params = QUICK_PARAMS if quick else {k: v[0] for k, v in SEARCH_SPACE.items()}
    return CandidateSpec(ABLATION_FAMILY, dict(params[ABLATION_FAMILY]))


def uses_roi(spec: CandidateSpec) -> bool:
    return spec.family.endswith("_roi") or (
        spec.family == "blend" and any(m.endswith("_roi") for m in spec.params["members"])
    )


# Half-lives (years) of the recency weights the selection tries on its chosen model (None:
# unweighted); quick mode tries one.
RECENCY_HALF_LIVES: tuple[float | None, ...] = (None, 20.0, 10.0, 6.0)
QUICK_HALF_LIVES: tuple[float | None, ...] = (None, 10.0)


def recency_weights(records: Records, half_life: float | None) -> Array | None:
    """Per-film weights that halve every `half_life` years of age before the latest dated film
    of `records`, scaled to a mean of 1 (None: unweighted). What the models learn drifts with
    release years (the hit rate is about 0.5 for films of 2000-2010 and 0.6 after), and the
    films a model scores next are newer than any it trained on. Undated films get the mean
    weight."""
    if half_life is None:
        return None
    days = np.asarray(
        [
            date.fromisoformat(str(r["release_date"])[:10]).toordinal()
            if r.get("release_date")
            else np.nan
            for r in records
        ],
        dtype=np.float64,
    )
    if np.isnan(days).all():
        return None
    weights = 0.5 ** ((np.nanmax(days) - days) / 365.25 / half_life)
    weights[np.isnan(weights)] = np.nanmean(weights)
    out: Array = weights / weights.mean()
    return out


def make_features(
    config: FeatureConfig | None,
    seed: int,
    schedule: tuple[tuple[int, str, float | None], ...] | None = None,
) -> FilmFeatures:
    """Schema 1 (`FilmFeatures`) when no config is given, else schema 2."""
    if config is None:
        return FilmFeatures(people_dropout=PEOPLE_DROPOUT, random_state=seed)
    g = config.groups
    return PreReleaseFeatures(
        people_dropout=PEOPLE_DROPOUT,
        random_state=seed,
        text_components=TEXT_COMPONENTS if "text" in g else 0,
        text_dropout=TEXT_DROPOUT if "text" in g else 0.0,
        franchise="franchise" in g,
        release_context="release_context" in g,
        constant_dollars="constant_dollars" in g,
        content_rating="content_rating" in g,
        schedule=schedule if "release_context" in g else None,
    )


def _estimator(task: Task, family: str, params: dict[str, Any], seed: int) -> Any:
    """The model after the feature step (a Pipeline for linear families)."""
    p = dict(params)
    regression = task.kind == "regression" or family.endswith("_roi")
    base = family.removesuffix("_roi")
    if base in ("ridge", "logistic_regression"):
        strength = p.pop("strength", None)
        if strength is not None:  # one knob for both: more is more regularization
            p = {"alpha": 30.0 * strength} if regression else {"C": 0.05 / strength}
        model: Any = (
            Ridge(**p) if regression else LogisticRegression(**p, max_iter=5000, random_state=seed)
        )
        # Medians for unknown facts plus "was missing" indicators: a linear model cannot
        # route NaN the way trees do.
        return Pipeline(
            [
                ("impute", SimpleImputer(strategy="median", add_indicator=True)),
                ("scale", StandardScaler()),
                ("model", model),
            ]
        )
    if base == "random_forest":
        cls = RandomForestRegressor if regression else RandomForestClassifier
        return cls(**{"max_features": 0.3, **p}, n_jobs=1, random_state=seed)
    if base == "hist_gradient_boosting":
        cls2 = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
        return cls2(**p, early_stopping=False, random_state=seed)
    if base == "lightgbm":
        import lightgbm as lgb

        cls3 = lgb.LGBMRegressor if regression else lgb.LGBMClassifier
        if p.get("subsample", 1.0) < 1.0:
            p.setdefault("subsample_freq", 1)
        return cls3(**p, n_jobs=1, verbose=-1, random_state=seed)
    raise ValueError(f"unknown model family {family!r}")


def build_tail(
    task: Task,
    spec: CandidateSpec,
    seed: int,
    config: FeatureConfig | None = None,
    calibration: Calibration | None = None,
) -> Any:
    """Everything after the feature step, wrapped for constant dollars or calibration."""
    if spec.family == "blend":
        members = [
            _estimator(task, m, p, seed)
            for m, p in zip(spec.params["members"], spec.params["settings"], strict=True)
        ]
        model: Any = AveragedRegressor(members)
    else:
        model = _estimator(task, spec.family, spec.params, seed)
    if task.kind == "regression":
        if config is not None and "constant_dollars" in config.groups:
            return ConstantDollarRegressor(model, column=-1)
        return model
    if config is None:
        return model  # schema 1: the classifier as before
    return CalibratedHit(model, "log_roi" if uses_roi(spec) else "label", calibration)


def build_pipeline(
    task: Task,
    spec: CandidateSpec,
    seed: int,
    config: FeatureConfig | None = None,
    schedule: tuple[tuple[int, str, float | None], ...] | None = None,
    calibration: Calibration | None = None,
) -> Pipeline:
    features = make_features(config, seed, schedule)
    tail = build_tail(task, spec, seed, config, calibration)
    if isinstance(tail, Pipeline) and config is None:
        return Pipeline([("features", features), *tail.steps])  # schema-1 layout, as before
    return Pipeline([("features", features), ("model", tail)])


def fit_target(task: Task, spec: CandidateSpec, records: Records) -> Array:
    """What the estimator is fitted on: the task's label, or the log ROI for `*_roi`."""
    if task.kind == "classification" and uses_roi(spec):
        return log_roi(records)
    return task.label(records)


def log_roi(records: Records) -> Array:
    return np.asarray(
        [math.log1p(float(r["revenue"])) - math.log1p(float(r["budget"])) for r in records],
        dtype=np.float64,
    )


def predict(task: Task, pipeline: Pipeline, records: Records) -> Array:
    """Log revenue for the regression task, P(hit) for the classification task."""
    if task.kind == "regression":
        return np.asarray(pipeline.predict(records), dtype=np.float64)
    return np.asarray(pipeline.predict_proba(records)[:, 1], dtype=np.float64)


def tail_score(task: Task, tail: Any, X: Array) -> Array:
    """The served score from a fitted tail: log revenue, or P(hit)."""
    if task.kind == "regression":
        return np.asarray(tail.predict(X), dtype=np.float64)
    return np.asarray(tail.predict_proba(X)[:, 1], dtype=np.float64)


def is_better(task: Task, a: float, b: float) -> bool:
    if math.isnan(b):
        return True
    return a > b if task.higher_is_better else a < b
