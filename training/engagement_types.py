"""What the engagement training produces for its card, report and MLflow run (kept apart
from `training.engagement` so that the report depends on these types, not on training)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from app.ml.card import Candidate, IntervalSpec
from training.split import Split

Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Spec:
    family: str
    params: dict[str, Any]


@dataclass
class OutputResult:
    """One output on the test films (only those where it is known)."""

    name: str
    y_test: Array
    pred_test: Array
    baseline_test: Array
    budget_known: BoolArray
    metrics: dict[str, float]
    interval: IntervalSpec
    importance: dict[str, float] = field(default_factory=dict)


@dataclass
class EngagementEvaluation:
    split: Split
    candidates: list[Candidate]
    chosen: dict[str, Spec]
    vote_history: bool
    ablation: dict[str, float]
    val_metrics: dict[str, float]
    metrics: dict[str, Any]
    outputs: dict[str, OutputResult]
