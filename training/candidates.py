"""The two prediction tasks and the model families compared for each.

Every candidate is a full `Pipeline(FilmFeatures -> [impute -> scale ->] estimator)`, so the
object that is evaluated is exactly the object that is saved and served.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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

from app.ml.features import FilmFeatures
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


def candidates(task: Task, quick: bool) -> list[CandidateSpec]:
    """A small grid per family: enough to tell the families apart and to pick sensible
    regularization, small enough to train both models in well under two minutes."""
    if task.kind == "regression":
        linear = CandidateSpec("ridge", {"alpha": 30.0})
        linear_grid = [CandidateSpec("ridge", {"alpha": a}) for a in (3.0, 30.0, 300.0)]
    else:
        linear = CandidateSpec("logistic_regression", {"C": 0.05})
        linear_grid = [CandidateSpec("logistic_regression", {"C": c}) for c in (0.01, 0.05, 0.3)]
    if quick:
        return [
            linear,
            CandidateSpec("random_forest", {"n_estimators": 30, "min_samples_leaf": 5}),
            CandidateSpec(
                "hist_gradient_boosting",
                {"max_iter": 40, "learning_rate": 0.1, "max_leaf_nodes": 7},
            ),
        ]
    return [
        *linear_grid,
        CandidateSpec(
            "random_forest", {"n_estimators": 200, "min_samples_leaf": 3, "max_features": 0.3}
        ),
        CandidateSpec(
            "random_forest", {"n_estimators": 200, "min_samples_leaf": 10, "max_features": 0.3}
        ),
        CandidateSpec(
            "hist_gradient_boosting",
            {
                "max_iter": 300,
                "learning_rate": 0.05,
                "max_leaf_nodes": 15,
                "min_samples_leaf": 20,
                "l2_regularization": 1.0,
            },
        ),
        CandidateSpec(
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


def build_pipeline(task: Task, spec: CandidateSpec, seed: int) -> Pipeline:
    features = FilmFeatures(people_dropout=PEOPLE_DROPOUT, random_state=seed)
    p = dict(spec.params)
    regression = task.kind == "regression"
    if spec.family in ("ridge", "logistic_regression"):
        model: Any = (
            Ridge(**p) if regression else LogisticRegression(**p, max_iter=5000, random_state=seed)
        )
        return Pipeline(
            [
                ("features", features),
                # Medians for unknown facts plus "was missing" indicators: a linear model
                # cannot route NaN the way trees do.
                ("impute", SimpleImputer(strategy="median", add_indicator=True)),
                ("scale", StandardScaler()),
                ("model", model),
            ]
        )
    if spec.family == "random_forest":
        cls = RandomForestRegressor if regression else RandomForestClassifier
        model = cls(**{"max_features": 0.3, **p}, n_jobs=1, random_state=seed)
    elif spec.family == "hist_gradient_boosting":
        cls2 = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
        model = cls2(**p, early_stopping=False, random_state=seed)
    else:
        raise ValueError(f"unknown model family {spec.family!r}")
    return Pipeline([("features", features), ("model", model)])


def predict(task: Task, pipeline: Pipeline, records: Records) -> Array:
    """Log revenue for the regression task, P(hit) for the classification task."""
    if task.kind == "regression":
        return np.asarray(pipeline.predict(records), dtype=np.float64)
    return np.asarray(pipeline.predict_proba(records)[:, 1], dtype=np.float64)


def is_better(task: Task, a: float, b: float) -> bool:
    if math.isnan(b):
        return True
    return a > b if task.higher_is_better else a < b
