"""Live accuracy: the metrics of logged predictions whose real outcome became known, named and
computed like training's test metrics (scikit-learn's implementations). Pure: numbers in,
numbers out; a figure that is undefined (ROC AUC with one class present) is None."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    median_absolute_error,
    precision_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_log_error,
)

FloatVector = npt.NDArray[np.float64]

# The figure `monitor check` compares with the card's test figure, and which way is better.
HEADLINE: dict[str, tuple[str, bool]] = {
    "revenue": ("rmsle", False),
    "hit": ("roc_auc", True),
    "engagement": ("vote_count_rmsle", False),
}
# The engagement card's test figures per output, and their live names.
ENGAGEMENT_TEST_FIGURES = {
    "vote_count": {
        "rmsle": "vote_count_rmsle",
        "median_ae_votes": "vote_count_median_ae",
        "interval_coverage": "vote_count_interval_coverage",
    },
    "vote_average": {
        "rmse": "vote_average_rmse",
        "mae": "vote_average_mae",
        "interval_coverage": "vote_average_interval_coverage",
    },
}


def flat_test_metrics(model: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """A card's test metrics under the names live accuracy uses."""
    if model != "engagement":
        return metrics
    flat: dict[str, Any] = {}
    for output, names in ENGAGEMENT_TEST_FIGURES.items():
        figures = metrics.get(output)
        if isinstance(figures, dict):
            flat.update({live: figures.get(test) for test, live in names.items()})
    return flat


def regression(
    revenue: Sequence[float],
    predicted: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
) -> dict[str, Any]:
    """RMSLE (the root mean squared error of log1p dollars, what training reports), the
    share of actual revenues inside their interval, and absolute errors in dollars."""
    y = np.asarray(revenue, dtype=np.float64)
    p = np.clip(np.asarray(predicted, dtype=np.float64), 0, None)
    if len(y) == 0:
        return {"rmsle": None, "interval_coverage": None, "mae_usd": None, "median_ae_usd": None}
    lo, hi = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    return {
        "rmsle": float(root_mean_squared_log_error(y, p)),
        "interval_coverage": float(np.mean((lo <= y) & (y <= hi))),
        "mae_usd": float(mean_absolute_error(y, p)),
        "median_ae_usd": float(median_absolute_error(y, p)),
    }


def _covered(actual: FloatVector, low: Sequence[float], high: Sequence[float]) -> float:
    lo, hi = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    return float(np.mean((lo <= actual) & (actual <= hi)))


def engagement(
    votes: Sequence[float],
    predicted_votes: Sequence[float],
    votes_low: Sequence[float],
    votes_high: Sequence[float],
    ratings: Sequence[float],
    predicted_ratings: Sequence[float],
    ratings_low: Sequence[float],
    ratings_high: Sequence[float],
) -> dict[str, Any]:
    """Votes: RMSLE (log1p votes, what training reports), median absolute error in votes and
    interval coverage; rating (films with enough votes to be rated): RMSE, MAE, coverage."""
    out: dict[str, Any] = dict.fromkeys(
        [*ENGAGEMENT_TEST_FIGURES["vote_count"].values(), "n_rated"], None
    )
    out |= dict.fromkeys(ENGAGEMENT_TEST_FIGURES["vote_average"].values())
    out["n_rated"] = len(ratings)
    if votes:
        y = np.asarray(votes, dtype=np.float64)
        p = np.clip(np.asarray(predicted_votes, dtype=np.float64), 0, None)
        out["vote_count_rmsle"] = float(root_mean_squared_log_error(y, p))
        out["vote_count_median_ae"] = float(median_absolute_error(y, p))
        out["vote_count_interval_coverage"] = _covered(y, votes_low, votes_high)
    if ratings:
        y = np.asarray(ratings, dtype=np.float64)
        p = np.asarray(predicted_ratings, dtype=np.float64)
        out["vote_average_rmse"] = float(np.sqrt(np.mean((p - y) ** 2)))
        out["vote_average_mae"] = float(mean_absolute_error(y, p))
        out["vote_average_interval_coverage"] = _covered(y, ratings_low, ratings_high)
    return out


def classification(
    actual: Sequence[bool], probability: Sequence[float], called: Sequence[bool]
) -> dict[str, Any]:
    """ROC AUC of the probabilities, and precision, recall, F1, accuracy and the confusion
    matrix of the yes/no calls the service made (at its version's threshold)."""
    y = np.asarray(actual, dtype=bool)
    pred = np.asarray(called, dtype=bool)
    if len(y) == 0:
        return {
            "roc_auc": None,
            "precision": None,
            "recall": None,
            "f1": None,
            "accuracy": None,
            "base_rate": None,
            "confusion_matrix": {"tn": 0, "fp": 0, "fn": 0, "tp": 0},
        }
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[False, True]).ravel())
    both = bool(y.any() and not y.all())
    return {
        "roc_auc": float(roc_auc_score(y, np.asarray(probability, dtype=np.float64)))
        if both
        else None,
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "accuracy": float(accuracy_score(y, pred)),
        "base_rate": float(y.mean()),
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
    }


def worse_than_test(
    model: str, live: dict[str, Any], test: dict[str, Any], margin: float
) -> str | None:
    """Why the live headline figure is worse than the test one by more than `margin`
    (relative), or None when it is not (or either figure is unknown)."""
    metric, higher_is_better = HEADLINE[model]
    now, then = live.get(metric), test.get(metric)
    if not isinstance(now, int | float) or not isinstance(then, int | float):
        return None
    if not (math.isfinite(now) and math.isfinite(then)):
        return None
    if higher_is_better and now < then * (1 - margin):
        return f"live {metric} {now:.3f} < test {then:.3f} - {margin:.0%}"
    if not higher_is_better and now > then * (1 + margin):
        return f"live {metric} {now:.3f} > test {then:.3f} + {margin:.0%}"
    return None
