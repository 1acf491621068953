"""Audience-engagement predictions behind `POST /v1/predict/engagement`: the TMDB votes a film
will gather and the rating it will reach, each with its 80% interval.

The same request body, features and registry as the other predictions
(`app.services.predict`); the model has two outputs (`app.ml.engagement`), each turned back
from the estimator's units (log1p votes, rating) with the split-conformal offsets its card
keeps per budget group (known / unknown), like the revenue interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from starlette.concurrency import run_in_threadpool

from app.ml.card import OutputSpec
from app.ml.engagement import OUTPUTS
from app.ml.features import film_record
from app.ml.monitoring import PredictionMonitor
from app.ml.registry import LoadedModel, ModelRegistry
from app.models.predict import Film, PredictRequest
from app.observability import PREDICTIONS
from app.services.model_admin import serving_model
from app.services.predict import (
    INLINE_MAX_ROWS,
    BatchTooLargeError,
    _dropped_warnings,
    film_document,
)

ENGAGEMENT = "engagement"
FloatVector = npt.NDArray[np.float64]


def _values(
    spec: OutputSpec, scores: FloatVector, known: npt.NDArray[np.bool_]
) -> tuple[FloatVector, FloatVector, FloatVector]:
    """(value, low, high) of one output in its own units, clipped to its valid range."""
    offsets = spec.interval.offsets
    pooled = offsets["all"]
    lo_known, hi_known = offsets.get("budget_known", pooled)
    lo_unknown, hi_unknown = offsets.get("budget_unknown", pooled)
    low = scores + np.where(known, lo_known, lo_unknown)
    high = scores + np.where(known, hi_known, hi_unknown)
    if spec.transform == "log1p":
        scores, low, high = np.expm1(scores), np.expm1(low), np.expm1(high)
    lower, upper = spec.bounds
    clipped = [np.clip(v, lower, upper) for v in (scores, low, high)]
    return clipped[0], clipped[1], clipped[2]


def _score(model: LoadedModel, films: Sequence[Film], monitor: PredictionMonitor) -> dict[str, Any]:
    """Everything CPU-bound for one request: features, both outputs, intervals, the body."""
    X = model.transform([film_record(film_document(f)) for f in films])
    scores = model.score_matrix(X)  # (films, 2): log1p(votes), rating
    outputs = model.card.outputs
    assert outputs is not None  # the registry refuses engagement cards without them
    known = X[:, model.feature_index["budget_known"]] > 0
    votes, votes_low, votes_high = _values(outputs["vote_count"], scores[:, 0], known)
    rating, rating_low, rating_high = _values(outputs["vote_average"], scores[:, 1], known)
    predictions: list[dict[str, Any]] = []
    for i, film in enumerate(films):
        # Votes are counted in whole votes; the interval is widened outwards to them.
        predictions.append(
            {
                "index": i,
                "title": film.title,
                "vote_count": float(round(votes[i])),
                "vote_average": round(float(rating[i]), 2),
                "intervals": {
                    "vote_count": {
                        "low": float(np.floor(votes_low[i])),
                        "high": float(np.ceil(votes_high[i])),
                    },
                    "vote_average": {
                        "low": round(float(rating_low[i]), 2),
                        "high": round(float(rating_high[i]), 2),
                    },
                },
            }
        )
    spec = outputs[OUTPUTS[0]].interval
    body: dict[str, Any] = {
        "model": model.name,
        "model_version": model.version,
        "interval_level": round(spec.quantiles[1] - spec.quantiles[0], 4),
        "predictions": predictions,
    }
    body["dropped_items"] = _dropped_warnings(films, predictions)
    # The monitor summarises one output per model: the expected votes (in log1p, as trained).
    monitor.record(model.name, model.version, X, model.feature_names, scores[:, 0])
    PREDICTIONS.labels(model=model.name, version=model.version).inc(len(films))
    return body


async def predict_engagement(
    registry: ModelRegistry, request: PredictRequest, max_batch: int
) -> dict[str, Any]:
    if len(request.items) > max_batch:
        raise BatchTooLargeError(f"{len(request.items)} films; at most {max_batch} per request")
    # Taken once: an activation during this request does not change the model answering it.
    model = serving_model(registry, ENGAGEMENT)
    if len(request.items) <= INLINE_MAX_ROWS:
        return _score(model, request.items, registry.monitor)
    return await run_in_threadpool(_score, model, request.items, registry.monitor)
