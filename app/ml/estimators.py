"""Estimator wrappers that trained pipelines pickle (feature schema 2): revenue learnt in
constant dollars, an average of models (stacking by equal weights), and the hit probability
as a calibrated score.

Each keeps the fitted inner estimators as plain attributes so that the registry can compile
them (`app.ml.fastpath`) and explain them with SHAP (`app.ml.shap_explain`) piece by piece.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.pipeline import Pipeline

FloatMatrix = npt.NDArray[np.float64]
FloatVector = npt.NDArray[np.float64]


def raw_score(estimator: Any, X: FloatMatrix) -> FloatVector:
    """A regressor's prediction, or a binary classifier's log-odds."""
    if hasattr(estimator, "predict_proba"):
        p = np.clip(
            np.asarray(estimator.predict_proba(X)[:, 1], dtype=np.float64), 1e-12, 1 - 1e-12
        )
        out: FloatVector = np.log(p / (1 - p))
        return out
    return np.asarray(estimator.predict(X), dtype=np.float64)


def fit_weighted(estimator: Any, X: Any, y: Any, sample_weight: FloatVector | None) -> Any:
    """`estimator.fit(X, y)` with per-film weights (training weighs recent films more, see
    `training.candidates.recency_weights`), routed to a Pipeline's last step; None fits
    unweighted."""
    if sample_weight is None:
        return estimator.fit(X, y)
    if isinstance(estimator, Pipeline):
        return estimator.fit(X, y, **{f"{estimator.steps[-1][0]}__sample_weight": sample_weight})
    return estimator.fit(X, y, sample_weight=sample_weight)


class ConstantDollarRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Learns log1p(revenue) minus the log price level of the release year (column `column`
    of X, see `PreReleaseFeatures`), i.e. revenue in constant dollars, and adds the level back
    when predicting: the model extrapolates inflation instead of having to learn it by year."""

    def __init__(self, estimator: Any = None, column: int = -1) -> None:
        self.estimator = estimator
        self.column = column

    def fit(
        self, X: FloatMatrix, y: FloatVector, sample_weight: FloatVector | None = None
    ) -> ConstantDollarRegressor:
        X = np.asarray(X, dtype=np.float64)
        self.estimator_ = fit_weighted(
            clone(self.estimator), X, np.asarray(y) - X[:, self.column], sample_weight
        )
        return self

    def predict(self, X: FloatMatrix) -> FloatVector:
        X = np.asarray(X, dtype=np.float64)
        return np.asarray(self.estimator_.predict(X), dtype=np.float64) + X[:, self.column]


class AveragedRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """The mean of several regressors' predictions (the stacking candidate; equal weights,
    so that nothing is fitted on the out-of-fold predictions it is judged by)."""

    def __init__(self, estimators: Sequence[Any] = ()) -> None:
        self.estimators = estimators

    def fit(
        self, X: FloatMatrix, y: FloatVector, sample_weight: FloatVector | None = None
    ) -> AveragedRegressor:
        self.estimators_ = [fit_weighted(clone(e), X, y, sample_weight) for e in self.estimators]
        return self

    def predict(self, X: FloatMatrix) -> FloatVector:
        out: FloatVector = np.mean([raw_score(e, X) for e in self.estimators_], axis=0)
        return out


@dataclass(frozen=True)
class Calibration:
    """score -> probability. `isotonic`: piecewise-linear through (x, y) knots; `platt`:
    sigmoid(a * score + b); `identity`: the score is already a probability's log-odds."""

    method: Literal["isotonic", "platt", "identity"]
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    a: float = 1.0
    b: float = 0.0

    def __call__(self, score: FloatVector) -> FloatVector:
        score = np.asarray(score, dtype=np.float64)
        if self.method == "isotonic":
            out: FloatVector = np.interp(score, self.x, self.y)
            return out
        z = self.a * score + self.b if self.method == "platt" else score
        return 1.0 / (1.0 + np.exp(-z))

    def slope(self, score: float) -> float:
        """d probability / d score at `score` (to express SHAP values in probability)."""
        if self.method == "isotonic":
            eps = 1e-3 * max(1.0, abs(score))
            hi, lo = self(np.asarray([score + eps])), self(np.asarray([score - eps]))
            return float((hi[0] - lo[0]) / (2 * eps))
        a = self.a if self.method == "platt" else 1.0
        p = float(self(np.asarray([score]))[0])
        return a * p * (1 - p)

    def describe(self) -> dict[str, Any]:
        if self.method == "isotonic":
            return {"method": "isotonic", "knots": len(self.x)}
        if self.method == "platt":
            return {"method": "platt", "a": round(self.a, 6), "b": round(self.b, 6)}
        return {"method": "identity"}


def fit_calibration(
    method: Literal["isotonic", "platt", "identity"], score: FloatVector, y: FloatVector
) -> Calibration:
    """Fit a calibration map on (out-of-fold score, outcome) pairs."""
    score = np.asarray(score, dtype=np.float64)
    if method == "identity":
        return Calibration("identity")
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e6, max_iter=1000).fit(score[:, None], y)
        return Calibration("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(score, y)
    # Keep probabilities off exact 0/1: a thin bin is no certainty.
    ys = np.clip(np.asarray(iso.y_thresholds_, dtype=np.float64), 0.005, 0.995)
    return Calibration(
        "isotonic",
        x=tuple(float(v) for v in iso.X_thresholds_),
        y=tuple(float(v) for v in ys),
    )


class CalibratedHit(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """P(hit) = calibration(score). The score is a classifier's log-odds (`target="label"`)
    or a regressor's predicted log ROI, log1p(revenue) - log1p(budget) (`target="log_roi"`:
    the continuous outcome carries more information than the yes/no label; training passes
    it as `y`). The calibration map is fitted by training on out-of-fold scores and passed in
    as data, so refitting the estimator never refits it on its own in-sample scores."""

    def __init__(
        self,
        estimator: Any = None,
        target: Literal["label", "log_roi"] = "label",
        calibration: Calibration | None = None,
    ) -> None:
        self.estimator = estimator
        self.target = target
        self.calibration = calibration

    def fit(
        self, X: FloatMatrix, y: FloatVector, sample_weight: FloatVector | None = None
    ) -> CalibratedHit:
        self.estimator_ = fit_weighted(clone(self.estimator), X, y, sample_weight)
        self.classes_ = np.asarray([0.0, 1.0])
        return self

    def decision_function(self, X: FloatMatrix) -> FloatVector:
        return raw_score(self.estimator_, np.asarray(X, dtype=np.float64))

    def predict_proba(self, X: FloatMatrix) -> FloatMatrix:
        s = self.decision_function(X)
        calibration = self.calibration or Calibration("identity")
        p = np.clip(calibration(s), 0.0, 1.0)
        return np.column_stack([1 - p, p])

    def predict(self, X: FloatMatrix) -> FloatVector:
        out: FloatVector = (self.predict_proba(X)[:, 1] >= 0.5).astype(np.float64)
        return out


def logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))
