"""What training produces and consumes: the options of a run, the evaluation of one task (read
by the report and by MLflow tracking) and the trained model it wrote. Kept apart from
`training.train` so the report and tracking modules depend on these types, not on training."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from app.ml.card import Candidate, IntervalSpec, ModelCard
from training.candidates import Array, CandidateSpec, Task
from training.split import Split


@dataclass
class TrainOptions:
    models: Sequence[str] = ("revenue", "hit", "engagement")
    quick: bool = False
    seed: int = 42
    split: Literal["time", "random"] = "time"
    refit_all: bool = True
    activate: bool = True
    report: bool = True
    mlflow: bool = True
    tracking_uri: str | None = None
    mlflow_dir: Path = Path(".data/mlruns")
    experiment: str = "tmdb-analytics"
    # Who activates what this run trains (MLflow's `champion` alias records it).
    activated_by: str = "training"
    threads: int = 1


@dataclass
class Evaluation:
    """Everything the report and MLflow need about one trained task."""

    task: Task
    split: Split
    candidates: list[Candidate]
    chosen: CandidateSpec
    val_metrics: dict[str, float]
    metrics: dict[str, Any]
    y_train: Array
    y_test: Array
    pred_test: Array
    test_budget_known: npt.NDArray[np.bool_]
    threshold: float | None = None
    interval: IntervalSpec | None = None
    importance: dict[str, float] = field(default_factory=dict)
    correlations: dict[str, float] = field(default_factory=dict)
    corr_names: list[str] = field(default_factory=list)
    corr_matrix: Array = field(default_factory=lambda: np.zeros((0, 0)))
    selection: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    pred_baseline: Array | None = None  # today's (schema-1) model on the same test films


@dataclass
class TrainedModel:
    name: str
    version: str
    path: Path
    card: ModelCard
    activated: bool
