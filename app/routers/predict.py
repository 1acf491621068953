"""Predictions: expected revenue with an interval, and the chance of a hit (public)."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.deps import AppSettings, Registry
from app.errors import problem_responses
from app.models.predict import HitResponse, PredictRequest, RevenueResponse
from app.services import predict as service

router = APIRouter(prefix="/v1/predict", tags=["predictions"])

Explain = Annotated[
    bool,
    Query(
        description="Add each film's top input-field contributions (SHAP for tree models, "
        "else occlusion; slower)"
    ),
]
ERRORS = problem_responses(413, 422, 500, 503)


def _json(body: dict[str, object]) -> Response:
    # The body is built from plain floats and strings by the service; orjson writes it ~10x
    # faster than re-validating 1,000 predictions through the response model.
    return Response(orjson.dumps(body), media_type="application/json")


@router.post(
    "/revenue",
    summary="Predict worldwide revenue",
    response_model=RevenueResponse,
    responses=ERRORS,
)
async def predict_revenue(
    body: PredictRequest, registry: Registry, settings: AppSettings, explain: Explain = False
) -> Response:
    """Expected worldwide revenue (USD) with an interval (80% unless `interval_level` asks
    for another) for each film, in order."""
    result = await service.predict(registry, "revenue", body, explain, settings.max_batch_size)
    return _json(result)


@router.post(
    "/hit",
    summary="Predict the chance of a hit",
    response_model=HitResponse,
    responses=ERRORS,
)
async def predict_hit(
    body: PredictRequest, registry: Registry, settings: AppSettings, explain: Explain = False
) -> Response:
    """Probability that each film earns at least twice its budget, and the yes/no call."""
    result = await service.predict(registry, "hit", body, explain, settings.max_batch_size)
    return _json(result)
