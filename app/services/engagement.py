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
from app.ml.monitoring import PredictionMonitor
from app.ml.registry import LoadedModel, ModelRegistry
from app.models.predict import Film
from app.models.predict_decode import CleanFilm
from app.observability import PREDICTIONS
from app.services.model_admin import serving_model
from app.services.predict import (
    INLINE_MAX_ROWS,
    TOP_CONTRIBUTIONS,
    Batch,
    BatchTooLargeError,
    ToLog,
    _dropped_warnings,
    film_records,
)
from app.services.prediction_log import LogContext, PredictionLogWriter

ENGAGEMENT = "engagement"
FloatVector = npt.NDArray[np.float64]
FloatMatrix = npt.NDArray[np.float64]


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


def _score(
    model: LoadedModel,
    request: Batch,
    monitor: PredictionMonitor,
    logged: Sequence[int] = (),
    explain: bool = False,
) -> tuple[dict[str, Any], ToLog | None]:
    """Everything CPU-bound for one request: features, both outputs, intervals, the body
    (with each film's top contributions per output if `explain`), and the log records of the
    films at positions `logged`."""
    films: Sequence[Film | CleanFilm] = request.items
    records = film_records(request)
    X = model.transform(records)
    contributions: list[FloatMatrix] | None = None
    if explain:
        explainer = model.output_explainer()
        scores, contributions = explainer.contributions(X, model.score_matrix)
    else:
        scores = model.score_matrix(X)  # (films, 2): log1p(votes), rating
    outputs = model.card.outputs
    assert outputs is not None  # the registry refuses engagement cards without them
    known = X[:, model.feature_index["budget_known"]] > 0
    votes, votes_low, votes_high = _values(outputs["vote_count"], scores[:, 0], known)
    rating, rating_low, rating_high = _values(outputs["vote_average"], scores[:, 1], known)
    # Votes are counted in whole votes; the interval is widened outwards to them. Python
    # floats once per column (`tolist`), not a numpy scalar per cell.
    columns = zip(
        votes.tolist(),
        rating.tolist(),
        np.floor(votes_low).tolist(),
        np.ceil(votes_high).tolist(),
        rating_low.tolist(),
        rating_high.tolist(),
        strict=True,
    )
    predictions: list[dict[str, Any]] = [
        {
            "index": i,
            "title": film.title,
            "vote_count": float(round(v)),
            "vote_average": round(r, 2),
            "intervals": {
                "vote_count": {"low": v_low, "high": v_high},
                "vote_average": {"low": round(r_low, 2), "high": round(r_high, 2)},
            },
        }
        for i, (film, (v, r, v_low, v_high, r_low, r_high)) in enumerate(
            zip(films, columns, strict=True)
        )
    ]
    spec = outputs[OUTPUTS[0]].interval
    body: dict[str, Any] = {
        "model": model.name,
        "model_version": model.version,
        "interval_level": round(spec.quantiles[1] - spec.quantiles[0], 4),
        "predictions": predictions,
    }
    if contributions is not None:
        for i, item in enumerate(predictions):
            item["contributions"] = {
                name: explainer.top(k, contributions[k][i], TOP_CONTRIBUTIONS)
                for k, name in enumerate(OUTPUTS)
            }
        body["explanation_methods"] = explainer.methods
    body["dropped_items"] = _dropped_warnings(films, predictions)
    # The monitor summarises one output per model: the expected votes (in log1p, as trained).
    monitor.record(model.name, model.version, X, model.feature_names, scores[:, 0])
    PREDICTIONS.labels(model=model.name, version=model.version).inc(len(films))
    if not logged:
        return body, None
    return body, ToLog.of(films, X, records, _logged_outputs(scores[:, 0], predictions), logged)


def _logged_outputs(scores: FloatVector, predictions: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """`score` (log1p votes, what drift watches), both outputs and their intervals, one column
    each."""
    columns: dict[str, list[Any]] = {"score": scores.tolist()}
    for name in OUTPUTS:
        columns[name] = [p[name] for p in predictions]
        for side in ("low", "high"):
            columns[f"{name}_{side}"] = [p["intervals"][name][side] for p in predictions]
    return columns


async def predict_engagement(
    registry: ModelRegistry,
    request: Batch,
    max_batch: int,
    prediction_log: PredictionLogWriter | None = None,
    context: LogContext | None = None,
    explain: bool = False,
) -> dict[str, Any]:
    if len(request.items) > max_batch:
        raise BatchTooLargeError(f"{len(request.items)} films; at most {max_batch} per request")
    # Taken once: an activation during this request does not change the model answering it.
    model = serving_model(registry, ENGAGEMENT)
    logged = prediction_log.choose(len(request.items)) if prediction_log is not None else []
    if len(request.items) <= INLINE_MAX_ROWS and not explain:
        body, to_log = _score(model, request, registry.monitor, logged)
    else:
        body, to_log = await run_in_threadpool(
            _score, model, request, registry.monitor, logged, explain
        )
    if to_log is not None and prediction_log is not None:
        # Queued only: the writer task writes it later, the answer never waits for the log.
        prediction_log.submit_pending(to_log.pending(model, context))
    return body
