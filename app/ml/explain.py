"""Per-prediction explanations: how much each input field moved this film's prediction.

Method (occlusion against a typical film): for every input field (budget, genres, director,
...), replace the film's features derived from it with those of a typical training film (the
per-feature training median kept by `FilmFeatures.reference_`) and re-score. The drop in the
score is that field's contribution. It works for every model family the training compares,
needs one batched scoring call (rows x fields), and its units are the model's own: log
revenue for `revenue`, probability for `hit`. Contributions are not additive like SHAP
values (fields interact), which is the price of being model-agnostic and cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

FloatMatrix = npt.NDArray[np.float64]
FloatVector = npt.NDArray[np.float64]


class GroupOcclusion:
    """Precomputed column groups for one fitted feature step."""

    def __init__(self, groups: Sequence[str], reference: FloatVector) -> None:
        self.names = list(dict.fromkeys(groups))
        self.columns = [
            np.asarray([i for i, g in enumerate(groups) if g == name], dtype=np.intp)
            for name in self.names
        ]
        self.reference = np.asarray(reference, dtype=np.float64)

    def contributions(
        self, X: FloatMatrix, score: Callable[[FloatMatrix], FloatVector]
    ) -> tuple[FloatVector, FloatMatrix]:
        """(scores, contributions[row, group]) for the rows of X."""
        n, width = X.shape
        stacked = np.repeat(X[None, :, :], len(self.names) + 1, axis=0)
        for k, cols in enumerate(self.columns, start=1):
            stacked[k][:, cols] = self.reference[cols]
        scores = score(stacked.reshape(-1, width)).reshape(len(self.names) + 1, n)
        base = scores[0]
        contrib: FloatMatrix = (base[None, :] - scores[1:]).T
        return base, contrib

    def top(
        self, contrib_row: FloatVector, k: int = 5, min_abs: float = 1e-9
    ) -> list[tuple[str, float]]:
        order = np.argsort(-np.abs(contrib_row))[:k]
        return [
            (self.names[i], float(contrib_row[i]))
            for i in order
            if abs(float(contrib_row[i])) > min_abs
        ]
