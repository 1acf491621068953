"""Per-prediction explanations with SHAP (`shap.TreeExplainer`, exact TreeSHAP) for tree
models, in the same shape as the occlusion explanations of `app.ml.explain`: one number per
input field (the sum of the SHAP values of the columns derived from it), top fields first.

Units are the served score's: log revenue for `revenue`, probability for `hit`.
- Revenue in constant dollars (`ConstantDollarRegressor`): SHAP explains the constant-dollar
  model; the price-level term it adds back is credited to `release_date`, against the typical
  training film's level. Contributions then add up to prediction - (average prediction).
- An average of models: the average of their SHAP values (SHAP is linear in the model).
- Hit (`CalibratedHit`): SHAP values of the raw score (log-odds or log ROI) are rescaled so
  that they add up to P(hit) - calibration(average raw score): each field keeps its share of
  the raw-score change, expressed in probability.

Models SHAP's TreeExplainer cannot explain (linear pipelines, schema-1 classifiers wrapped
in nothing of ours are fine) make `build` return None, and the registry falls back to
occlusion. `shap` is imported on first use only: it pulls in numba and costs seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import Pipeline

from app.ml.estimators import AveragedRegressor, CalibratedHit, Calibration, ConstantDollarRegressor

FloatMatrix = npt.NDArray[np.float64]
FloatVector = npt.NDArray[np.float64]
TREES = (
    HistGradientBoostingRegressor,
    HistGradientBoostingClassifier,
    RandomForestRegressor,
    RandomForestClassifier,
)


def is_tree(model: Any) -> bool:
    return isinstance(model, TREES) or type(model).__module__.startswith("lightgbm")


class ShapExplainer:
    """TreeExplainers for the tree models inside a fitted pipeline's tail."""

    def __init__(
        self,
        members: Sequence[Any],
        groups: Sequence[str],
        reference: FloatVector,
        offset_column: int | None,
        calibration: Calibration | None,
    ) -> None:
        import shap  # type: ignore[import-untyped]  # deferred: heavy

        self.names = list(dict.fromkeys(groups))
        index = {n: k for k, n in enumerate(self.names)}
        self.membership = np.zeros((len(groups), len(self.names)))
        for j, g in enumerate(groups):
            self.membership[j, index[g]] = 1.0
        self.explainers = [shap.TreeExplainer(m) for m in members]
        self.weight = 1.0 / len(members)
        self.classifier_members = [hasattr(m, "predict_proba") for m in members]
        self.reference = np.asarray(reference, dtype=np.float64)
        self.offset_column = offset_column
        self.offset_group = index[groups[offset_column]] if offset_column is not None else None
        self.calibration = calibration
        self.base = float(
            sum(self._expected(e) for e in self.explainers) * self.weight
        )  # raw-score baseline

    @staticmethod
    def _expected(explainer: Any) -> float:
        return float(np.ravel(explainer.expected_value)[-1])

    @staticmethod
    def _values(explainer: Any, X: FloatMatrix) -> FloatMatrix:
        values = explainer.shap_values(X, check_additivity=False)
        if isinstance(values, list):  # per class
            values = values[-1]
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 3:  # (rows, features, classes)
            values = values[:, :, -1]
        return values

    @classmethod
    def build(cls, pipeline: Pipeline) -> ShapExplainer | None:
        """An explainer for `pipeline`, or None when its model is not made of trees."""
        from app.ml.prerelease import PreReleaseFeatures

        features = pipeline[0]
        steps = pipeline.steps[1:]
        # Schema-1 artifacts keep their occlusion explanations.
        if not isinstance(features, PreReleaseFeatures) or len(steps) != 1:
            return None
        model = steps[0][1]
        offset_column = None
        calibration = None
        if isinstance(model, ConstantDollarRegressor):
            offset_column = model.column % len(features.feature_names_)
            model = model.estimator_
        elif isinstance(model, CalibratedHit):
            calibration = model.calibration or Calibration("identity")
            model = model.estimator_
        members = list(model.estimators_) if isinstance(model, AveragedRegressor) else [model]
        if not all(is_tree(m) for m in members):
            return None
        if calibration is not None and any(isinstance(m, RandomForestClassifier) for m in members):
            return None  # SHAP of a forest's probability is not on the log-odds scale
        # Probability-valued members (forests) cannot be summed with log-odds ones.
        if len(members) > 1 and len({hasattr(m, "predict_proba") for m in members}) > 1:
            return None
        return cls(
            members, features.feature_groups_, features.reference_, offset_column, calibration
        )

    def contributions(
        self, X: FloatMatrix, score: Callable[[FloatMatrix], FloatVector]
    ) -> tuple[FloatVector, FloatMatrix]:
        """(served scores, contributions[row, field])."""
        scores = score(X)
        phi = sum(self._values(e, X) for e in self.explainers) * self.weight
        grouped: FloatMatrix = np.asarray(phi, dtype=np.float64) @ self.membership
        if self.offset_column is not None and self.offset_group is not None:
            grouped[:, self.offset_group] += (
                X[:, self.offset_column] - self.reference[self.offset_column]
            )
        if self.calibration is not None:
            grouped = self._to_probability(grouped, scores)
        return scores, grouped

    def _to_probability(self, grouped: FloatMatrix, proba: FloatVector) -> FloatMatrix:
        assert self.calibration is not None
        base_p = float(self.calibration(np.asarray([self.base]))[0])
        total = grouped.sum(axis=1)
        change = proba - base_p
        slope = self.calibration.slope(self.base)
        factor = np.where(np.abs(total) > 1e-9, change / np.where(total == 0, 1, total), slope)
        out: FloatMatrix = grouped * factor[:, None]
        return out

    def top(
        self, contrib_row: FloatVector, k: int = 5, min_abs: float = 1e-9
    ) -> list[tuple[str, float]]:
        order = np.argsort(-np.abs(contrib_row))[:k]
        return [
            (self.names[i], float(contrib_row[i]))
            for i in order
            if abs(float(contrib_row[i])) > min_abs
        ]
