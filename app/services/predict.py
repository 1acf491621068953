"""Predictions behind `/v1/predict/*`: validate, featurize, score, explain, count."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from starlette.concurrency import run_in_threadpool

from app.errors import DomainError
from app.ml.card import IntervalSpec
from app.ml.features import film_record
from app.ml.monitoring import PredictionMonitor
from app.ml.registry import LoadedModel, ModelRegistry
from app.models.predict import (
    Film,
    PredictRequest,
)
from app.models.predict_decode import CleanBatch, CleanFilm
from app.observability import PREDICT_ITEMS_DROPPED, PREDICTIONS
from app.services.model_admin import serving_model
from app.services.prediction_log import LogContext, PendingPredictions, PredictionLogWriter

# A validated prediction body: pydantic's, or a clean one decoded without it (`decode_clean`).
Batch = PredictRequest | CleanBatch
FloatMatrix = npt.NDArray[np.float64]
FloatVector = npt.NDArray[np.float64]
TOP_CONTRIBUTIONS = 5
# A batch this small is scored on the event loop. Measured for one film (features, compiled
# trees, response): p50 0.32 ms inline against 0.49 ms through `run_in_threadpool`, the hop
# costing more than the work. Bigger batches (and explanations, one re-score per input
# field) go to the thread pool so that the loop keeps serving other requests meanwhile.
INLINE_MAX_ROWS = 1


class BatchTooLargeError(DomainError):
    status = 413
    title = "Content Too Large"


class IntervalLevelError(DomainError):
    status = 422
    title = "Unprocessable Content"


def interval_offsets(
    interval: IntervalSpec, level: float | None
) -> tuple[float, dict[str, tuple[float, float]]]:
    """(nominal level, offsets per budget group) for a requested level (None: the default)."""
    default = round(interval.quantiles[1] - interval.quantiles[0], 4)
    if level is None or abs(level - default) < 1e-9:
        return default, interval.offsets
    key = f"{level:.2f}"
    levels = interval.levels or {}
    if abs(level - round(level, 2)) > 1e-9 or key not in levels:
        offered = sorted({*levels, f"{default:.2f}"})
        raise IntervalLevelError(f"interval_level {level}: this model offers {', '.join(offered)}")
    return float(key), levels[key]


def _names(values: Sequence[str | Mapping[str, Any]], code_key: str | None = None) -> list[str]:
    out: list[str] = []
    for v in values:
        if isinstance(v, str):
            name = v
        else:
            name = str(v.get(code_key) or v["name"]) if code_key else str(v["name"])
        if name not in out:
            out.append(name)
    return out


def film_document(film: Film) -> dict[str, Any]:
    """The request film in the stored `movies` shape, so that `film_record` (the same code
    that prepared the training films) derives its features."""
    collection = film.belongs_to_collection
    cast = [
        {"name": c, "order": i}
        if isinstance(c, str)
        else {"name": c["name"], "order": c.get("order", i)}
        for i, c in enumerate(film.cast)
    ]
    crew = [{"name": c["name"], "job": c.get("job")} for c in film.crew if not isinstance(c, str)]
    return {
        "title": film.title,
        "budget": film.budget,
        "runtime": film.runtime,
        "release_date": film.release_date.isoformat() if film.release_date else None,
        "original_language": film.original_language,
        "genres": _names(film.genres),
        "production_companies": _names(film.production_companies),
        "production_countries": _names(film.production_countries, "iso_3166_1"),
        "spoken_languages": _names(film.spoken_languages, "iso_639_1"),
        "keywords": _names(film.keywords),
        "homepage": film.homepage,
        "tagline": film.tagline,
        "overview": film.overview,
        "content_rating": film.content_rating,
        "belongs_to_collection": collection
        if collection is None or isinstance(collection, str)
        else collection["name"],
        "cast": cast,
        "crew": crew,
    }


def _contributions(model: LoadedModel, row: FloatVector) -> list[dict[str, Any]]:
    return [
        {"feature": f, "contribution": round(c, 5)}
        for f, c in model.explainer().top(row, TOP_CONTRIBUTIONS)
    ]


def _dropped_warnings(films: Sequence[Film | CleanFilm], predictions: list[dict[str, Any]]) -> int:
    """Say, per film, which list items validation dropped for a blank name; count them."""
    total = 0
    for film, item in zip(films, predictions, strict=True):
        if not film.dropped:
            continue
        item["warnings"] = [
            f"{field}.{index}: blank name, item dropped"
            if index is not None
            else f"{field}: blank name, dropped"
            for field, index in film.dropped
        ]
        for field, _ in film.dropped:
            PREDICT_ITEMS_DROPPED.labels(field=field).inc()
        total += len(film.dropped)
    return total


@dataclass
class ToLog:
    """What the prediction log keeps of a request's logged films (built with the answer;
    their monitored inputs are read from `X` later, by the log's writer)."""

    ids: list[int | None]
    X: npt.NDArray[np.float64]  # the logged films' rows of the feature matrix
    records: list[dict[str, Any]]
    outputs: dict[str, list[Any]]  # what the model said, column by column

    @classmethod
    def of(
        cls,
        films: Sequence[Film | CleanFilm],
        X: npt.NDArray[np.float64],
        records: list[dict[str, Any]],
        outputs: dict[str, list[Any]],
        logged: Sequence[int],
    ) -> ToLog:
        """The films at positions `logged` (all of them, by default: taken as they are)."""
        if len(logged) == len(films):
            return cls([film.id for film in films], X, records, outputs)
        picked = list(logged)
        return cls(
            [films[i].id for i in picked],
            X[picked],
            [records[i] for i in picked],
            {name: [values[i] for i in picked] for name, values in outputs.items()},
        )

    def pending(self, model: LoadedModel, context: LogContext | None) -> PendingPredictions:
        return PendingPredictions(
            model.name,
            model.version,
            context or LogContext(None, None),
            datetime.now(UTC),
            self.ids,
            model.input_reader,
            self.X,
            self.records,
            self.outputs,
        )


def film_records(request: Batch) -> list[dict[str, Any]]:
    """The canonical record of each film: derived while validating on the fast paths, else
    from the validated films (the same records either way)."""
    if isinstance(request, CleanBatch):
        return request.records
    known = request.records or [None] * len(request.items)
    return [
        film_record(film_document(film)) if record is None else record
        for film, record in zip(request.items, known, strict=True)
    ]


def _score(
    model: LoadedModel,
    request: Batch,
    explain: bool,
    monitor: PredictionMonitor,
    logged: Sequence[int] = (),
    level: float | None = None,
) -> tuple[dict[str, Any], ToLog | None]:
    """Everything CPU-bound for one request: features, scores, explanations, the body, and
    the log records of the films at positions `logged`. `level`: the revenue interval's
    nominal coverage (None: the card's default)."""
    films: Sequence[Film | CleanFilm] = request.items
    records = film_records(request)
    X = model.transform(records)
    if explain:
        scores, contrib = model.explain(X)
    else:
        scores, contrib = model.score_matrix(X), None
    index = model.feature_index
    outputs: list[dict[str, Any]]  # per film, what the model says
    extra: dict[str, Any]  # for the whole body
    logs: dict[str, list[Any]]  # what the log keeps of every film's output, column by column
    raw = scores.tolist()  # Python floats once, not a numpy scalar per cell
    if model.classifier:
        threshold = float(model.card.threshold or 0.5)
        outputs = [{"probability": round(p, 5), "hit": p >= threshold} for p in raw]
        extra = {"threshold": threshold}
        logs = {
            "score": raw,
            "probability": [output["probability"] for output in outputs],
            "hit": [output["hit"] for output in outputs],
            "threshold": [threshold] * len(raw),
        }
    else:
        interval = model.card.interval
        assert interval is not None  # the registry refuses regression cards without one
        nominal, offsets = interval_offsets(interval, level)
        known = X[:, index["budget_known"]] > 0
        low, high = _bounds(scores, known, offsets)
        revenue = [round(r, 2) for r in np.expm1(scores).clip(min=0).tolist()]
        lows, highs = _cents(low), _cents(high)
        outputs = [
            {"revenue": r, "interval": {"low": lo, "high": hi}}
            for r, lo, hi in zip(revenue, lows, highs, strict=True)
        ]
        extra = {"interval_level": nominal}
        if logged and offsets is not interval.offsets:
            # The log keeps the default-level interval whatever level the request asked
            # for: live coverage (`app.ml.live_metrics`) is read against the card's default.
            low, high = _bounds(scores, known, interval.offsets)
            lows, highs = _cents(low), _cents(high)
        logs = {"score": raw, "revenue": revenue, "low": lows, "high": highs}
    predictions: list[dict[str, Any]] = [
        {"index": i, "title": film.title, **output}
        for i, (film, output) in enumerate(zip(films, outputs, strict=True))
    ]
    if contrib is not None:
        for item, row in zip(predictions, contrib, strict=True):
            item["contributions"] = _contributions(model, row)
    body: dict[str, Any] = {
        "model": model.name,
        "model_version": model.version,
        **extra,
        "predictions": predictions,
    }
    body["dropped_items"] = _dropped_warnings(films, predictions)
    monitor.record(model.name, model.version, X, model.feature_names, scores)
    PREDICTIONS.labels(model=model.name, version=model.version).inc(len(films))
    if not logged:
        return body, None
    return body, ToLog.of(films, X, records, logs, logged)


def _bounds(
    scores: FloatVector, known: npt.NDArray[np.bool_], offsets: Mapping[str, tuple[float, float]]
) -> tuple[FloatVector, FloatVector]:
    """The revenue interval (USD) around log1p scores, with the offsets of each film's
    budget group (the pooled ones for a group the card does not split out)."""
    pooled = offsets["all"]
    lo_known, hi_known = offsets.get("budget_known", pooled)
    lo_unknown, hi_unknown = offsets.get("budget_unknown", pooled)
    low = np.expm1(scores + np.where(known, lo_known, lo_unknown)).clip(min=0)
    high = np.expm1(scores + np.where(known, hi_known, hi_unknown)).clip(min=0)
    return low, high


def _cents(values: FloatVector) -> list[float]:
    return [round(v, 2) for v in values.tolist()]


async def predict(
    registry: ModelRegistry,
    name: str,
    request: Batch,
    explain: bool,
    max_batch: int,
    prediction_log: PredictionLogWriter | None = None,
    context: LogContext | None = None,
) -> dict[str, Any]:
    if len(request.items) > max_batch:
        raise BatchTooLargeError(f"{len(request.items)} films; at most {max_batch} per request")
    # Taken once: a reload during this request does not change the model that answers it.
    model = serving_model(registry, name)
    level = request.interval_level if name == "revenue" else None
    if level is not None and model.card.interval is not None:
        interval_offsets(model.card.interval, level)  # a 422 before any work
    films = request.items
    logged = prediction_log.choose(len(films)) if prediction_log is not None else []
    if len(films) <= INLINE_MAX_ROWS and not explain:
        body, to_log = _score(model, request, explain, registry.monitor, logged, level)
    else:
        body, to_log = await run_in_threadpool(
            _score, model, request, explain, registry.monitor, logged, level
        )
    if to_log is not None and prediction_log is not None:
        # Queued only: the writer task writes it later, the answer never waits for the log.
        prediction_log.submit_pending(to_log.pending(model, context))
    return body
