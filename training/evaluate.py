"""Metrics written to model cards and MLflow."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def regression_metrics(y_log: Array, pred_log: Array) -> dict[str, float]:
    """RMSLE and R² on log1p dollars (what the model optimizes), MAE in dollars (what a
    reader understands; dominated by blockbusters)."""
    err = pred_log - y_log
    ss_res = float(np.sum(err**2))
    ss_tot = float(np.sum((y_log - y_log.mean()) ** 2))
    dollars = np.abs(np.expm1(pred_log) - np.expm1(y_log))
    return {
        "rmsle": math.sqrt(ss_res / len(y_log)),
        "mae_usd": float(dollars.mean()),
        "median_ae_usd": float(np.median(dollars)),
        "r2_log": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "n": float(len(y_log)),
    }


def conformal_offsets(residuals: Array, quantiles: tuple[float, float]) -> tuple[float, float]:
    """Split-conformal offsets: residual (truth - prediction) quantiles, with the finite-sample
    correction so that coverage holds for exchangeable new films."""
    n = len(residuals)
    lo_q, hi_q = quantiles
    lo = float(np.quantile(residuals, max(0.0, math.floor(lo_q * (n + 1)) / n), method="lower"))
    hi = float(np.quantile(residuals, min(1.0, math.ceil(hi_q * (n + 1)) / n), method="higher"))
    return lo, hi


def interval_groups(budget_known: BoolArray) -> list[str]:
    return ["budget_known" if k else "budget_unknown" for k in budget_known]


def fit_interval(
    residuals: Array, budget_known: BoolArray, quantiles: tuple[float, float], min_rows: int = 30
) -> dict[str, tuple[float, float]]:
    """Offsets per budget group (Mondrian conformal); a group with too few held-out films
    falls back to the pooled offsets."""
    pooled = conformal_offsets(residuals, quantiles)
    out = {"all": pooled}
    for group, mask in (("budget_known", budget_known), ("budget_unknown", ~budget_known)):
        out[group] = (
            conformal_offsets(residuals[mask], quantiles) if mask.sum() >= min_rows else pooled
        )
    return out


def interval_coverage(
    y_log: Array, pred_log: Array, budget_known: BoolArray, offsets: dict[str, tuple[float, float]]
) -> float:
    inside = 0
    for y, p, group in zip(y_log, pred_log, interval_groups(budget_known), strict=True):
        lo, hi = offsets.get(group, offsets["all"])
        inside += int(p + lo <= y <= p + hi)
    return inside / len(y_log) if len(y_log) else float("nan")


def choose_threshold(y: Array, proba: Array) -> float:
    """The threshold maximising Youden's J (TPR - FPR) on validation. F1 would be the other
    usual choice, but with more than half of the films being hits it rewards calling almost
    everything a hit, which tells a partner nothing."""
    best_t, best_j = 0.5, -1.0
    positives = max(1.0, float(y.sum()))
    negatives = max(1.0, float(len(y) - y.sum()))
    for t in np.unique(np.round(proba, 3)):
        pred = proba >= t
        tpr = float((pred & (y == 1)).sum()) / positives
        fpr = float((pred & (y == 0)).sum()) / negatives
        if tpr - fpr > best_j:
            best_t, best_j = float(t), tpr - fpr
    return best_t


def classification_metrics(y: Array, proba: Array, threshold: float) -> dict[str, object]:
    pred = proba >= threshold
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    both_classes = len(np.unique(y)) == 2
    return {
        "roc_auc": float(roc_auc_score(y, proba)) if both_classes else float("nan"),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "accuracy": float(accuracy_score(y, pred)),
        "brier": float(brier_score_loss(y, proba)),
        "base_rate": float(y.mean()),
        "threshold": threshold,
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
        "n": float(len(y)),
    }


def reliability_table(y: Array, proba: Array, bins: int = 10) -> list[dict[str, float]]:
    """Equal-width probability bins: mean predicted, observed rate, films (empty bins out)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(proba, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            out.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "predicted": float(proba[mask].mean()),
                    "observed": float(y[mask].mean()),
                    "n": float(mask.sum()),
                }
            )
    return out


def expected_calibration_error(y: Array, proba: Array, bins: int = 10) -> float:
    """ECE: the film-weighted mean |observed rate - mean predicted| over equal-width bins."""
    table = reliability_table(y, proba, bins)
    n = sum(row["n"] for row in table)
    return float(sum(row["n"] * abs(row["observed"] - row["predicted"]) for row in table) / n)
