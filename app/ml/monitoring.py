"""What the models are asked, per model version: request and prediction counts, and running
summaries of the main input features and of the outputs, the raw material of drift
monitoring (compare `mean` with the training median the card's features were built on).

Kept in memory per process (exposed as `monitoring` in `GET /v1/models/{name}`) and mirrored
as Prometheus counters, which a `/metrics` endpoint of the default registry exports.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import Counter

FloatMatrix = npt.NDArray[np.float64]
FloatVector = npt.NDArray[np.float64]

# The inputs worth watching: money, timing, how much the client told us, and the strongest
# track-record signals. Others are a multi-hot tail that summaries would not make readable.
MONITORED_FEATURES = (
    "log_budget",
    "budget_known",
    "runtime",
    "release_year",
    "n_genres",
    "n_keywords",
    "n_companies",
    "n_directors",
    "n_lead_actors",
    "director_prior_mean_log_revenue",
    "cast_prior_mean_log_revenue",
    "companies_prior_mean_log_revenue",
    "has_homepage",
)

PREDICTIONS = Counter(
    "tmdb_model_predictions", "Films scored, per model and version", ["model", "version"]
)
REQUESTS = Counter(
    "tmdb_model_requests", "Prediction requests, per model and version", ["model", "version"]
)


class _Running:
    """Count, missing count, sum and sum of squares per column, updated a batch at a time
    (a handful of numpy operations, whatever the number of columns)."""

    def __init__(self, width: int) -> None:
        self.n = np.zeros(width)
        self.missing = np.zeros(width)
        self.total = np.zeros(width)
        self.squares = np.zeros(width)

    def add(self, block: FloatMatrix) -> None:
        known = ~np.isnan(block)
        values = np.where(known, block, 0.0)
        counted = known.sum(axis=0)
        self.n += counted
        self.missing += block.shape[0] - counted
        self.total += values.sum(axis=0)
        self.squares += (values * values).sum(axis=0)

    def summary(self, j: int, reference: float | None = None) -> dict[str, Any]:
        n, missing = float(self.n[j]), float(self.missing[j])
        mean = float(self.total[j]) / n if n else None
        var = float(self.squares[j]) / n - (mean or 0.0) ** 2 if n else None
        out: dict[str, Any] = {
            "mean": mean,
            "std": math.sqrt(max(var, 0.0)) if var is not None else None,
            "missing_rate": missing / (n + missing) if n + missing else None,
        }
        if reference is not None and math.isfinite(reference):
            out["training_median"] = reference
        return out


@dataclass
class _VersionStats:
    columns: list[str]
    started_at: float = field(default_factory=time.time)
    last_at: float | None = None
    requests: int = 0
    predictions: int = 0
    features: _Running = field(init=False)
    output: _Running = field(default_factory=lambda: _Running(1))

    def __post_init__(self) -> None:
        self.features = _Running(len(self.columns))


class PredictionMonitor:
    """Thread-safe: inference runs in worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, str], _VersionStats] = {}
        self._columns: dict[tuple[str, ...], tuple[list[str], npt.NDArray[np.intp]]] = {}

    def _monitored(self, feature_names: tuple[str, ...]) -> tuple[list[str], npt.NDArray[np.intp]]:
        found = self._columns.get(feature_names)
        if found is None:
            index = {n: i for i, n in enumerate(feature_names)}
            names = [n for n in MONITORED_FEATURES if n in index]
            found = (names, np.asarray([index[n] for n in names], dtype=np.intp))
            self._columns[feature_names] = found
        return found

    def record(
        self,
        model: str,
        version: str,
        X: FloatMatrix,
        feature_names: tuple[str, ...],
        outputs: FloatVector,
    ) -> None:
        names, index = self._monitored(feature_names)
        block = X[:, index]
        with self._lock:
            stats = self._stats.get((model, version))
            if stats is None:
                stats = self._stats[(model, version)] = _VersionStats(columns=names)
            stats.requests += 1
            stats.predictions += int(X.shape[0])
            stats.last_at = time.time()
            stats.features.add(block)
            stats.output.add(outputs.reshape(-1, 1))
        PREDICTIONS.labels(model, version).inc(int(X.shape[0]))
        REQUESTS.labels(model, version).inc()

    def snapshot(self, model: str, reference: dict[str, float] | None = None) -> dict[str, Any]:
        """Per version of `model`: counts, feature summaries, output summary."""
        reference = reference or {}
        with self._lock:
            items = [(v, s) for (m, v), s in self._stats.items() if m == model]
            return {
                version: {
                    "since": _iso(stats.started_at),
                    "last_prediction_at": _iso(stats.last_at) if stats.last_at else None,
                    "requests": stats.requests,
                    "predictions": stats.predictions,
                    "features": {
                        name: stats.features.summary(j, reference.get(name))
                        for j, name in enumerate(stats.columns)
                    },
                    "output": stats.output.summary(0),
                }
                for version, stats in items
            }

    def reset(self) -> None:
        with self._lock:
            self._stats.clear()


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
