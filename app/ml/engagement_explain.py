"""Per-prediction explanations of the engagement model: for each of its two outputs, how much
each input field moved this film's prediction, in the shape the other models use (one
number per input field, top fields first).

Each output has its own estimator (`EngagementRegressor.estimators_`), so each gets its own
method:

* a tree model (gradient boosting, forest): SHAP (`shap.TreeExplainer`, exact TreeSHAP),
  summed per input field; the contributions of a film add up to its prediction minus the
  model's average prediction;
* anything else (the ridge pipeline the rating often picks): occlusion against the typical
  training film (`app.ml.explain.GroupOcclusion`). For a linear model this is exact and
  additive too: each field's share of prediction - prediction(typical film).

Units are each output's model units: log1p(votes) for `vote_count` (0.69 is a doubling of
the votes), rating points for `vote_average`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.pipeline import Pipeline

from app.ml.engagement import OUTPUTS, EngagementRegressor
from app.ml.explain import GroupOcclusion
from app.ml.shap_explain import ShapExplainer, is_tree

FloatMatrix = npt.NDArray[np.float64]
FloatVector = npt.NDArray[np.float64]
Explainer = ShapExplainer | GroupOcclusion


class EngagementExplainer:
    """One explainer per output of a fitted engagement pipeline."""

    def __init__(self, explainers: list[Explainer]) -> None:
        self.explainers = explainers
        self.methods = {
            name: "shap" if isinstance(e, ShapExplainer) else "occlusion"
            for name, e in zip(OUTPUTS, explainers, strict=True)
        }

    @classmethod
    def build(cls, pipeline: Pipeline, occlusion: GroupOcclusion) -> EngagementExplainer:
        features = pipeline[0]
        regressor = pipeline.steps[-1][1]
        if len(pipeline.steps) != 2 or not isinstance(regressor, EngagementRegressor):
            raise TypeError("not an engagement pipeline")
        explainers: list[Explainer] = []
        for estimator in regressor.estimators_:
            if is_tree(estimator):
                explainers.append(
                    ShapExplainer(
                        [estimator], features.feature_groups_, features.reference_, None, None
                    )
                )
            else:
                explainers.append(occlusion)
        return cls(explainers)

    def contributions(
        self, X: FloatMatrix, score: Callable[[FloatMatrix], FloatMatrix]
    ) -> tuple[FloatMatrix, list[FloatMatrix]]:
        """(scores (films, outputs), per output its contributions[film, field])."""
        scores = score(X)
        out: list[FloatMatrix] = []
        for k, explainer in enumerate(self.explainers):

            def column(M: FloatMatrix, k: int = k) -> FloatVector:
                if M is X:
                    return scores[:, k]  # scored once above
                values: FloatVector = score(M)[:, k]
                return values

            out.append(explainer.contributions(X, column)[1])
        return scores, out

    def top(self, output: int, row: FloatVector, k: int) -> list[dict[str, Any]]:
        return [
            {"feature": f, "contribution": round(c, 5)}
            for f, c in self.explainers[output].top(row, k)
        ]
