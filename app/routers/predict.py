"""Predictions: expected revenue with an interval, the chance of a hit, and audience
engagement (votes and rating with intervals)."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import Query
from fastapi.responses import Response

from app.deps import AppSettings, PredictionLog, Registry
from app.errors import problem_responses
from app.models.predict import EngagementResponse, HitResponse, PredictRequest, RevenueResponse
from app.observability import REQUEST_ID
from app.routers.json_body import json_router
from app.security import CurrentPrincipal
from app.services import engagement
from app.services import predict as service
from app.services.prediction_log import LogContext

router = json_router(prefix="/v1/predict", tags=["predictions"])

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
    body: PredictRequest,
    registry: Registry,
    settings: AppSettings,
    prediction_log: PredictionLog,
    principal: CurrentPrincipal,
    explain: Explain = False,
) -> Response:
    """Expected worldwide revenue (USD) with an interval (80% unless `interval_level` asks
    for another) for each film, in order."""
    result = await service.predict(
        registry,
        "revenue",
        body,
        explain,
        settings.max_batch_size,
        prediction_log,
        LogContext(REQUEST_ID.get(), str(principal)),
    )
    return _json(result)


@router.post(
    "/hit",
    summary="Predict the chance of a hit",
    response_model=HitResponse,
    responses=ERRORS,
)
async def predict_hit(
    body: PredictRequest,
    registry: Registry,
    settings: AppSettings,
    prediction_log: PredictionLog,
    principal: CurrentPrincipal,
    explain: Explain = False,
) -> Response:
    """Probability that each film earns at least twice its budget, and the yes/no call."""
    result = await service.predict(
        registry,
        "hit",
        body,
        explain,
        settings.max_batch_size,
        prediction_log,
        LogContext(REQUEST_ID.get(), str(principal)),
    )
    return _json(result)


@router.post(
    "/engagement",
    summary="Predict audience engagement",
    response_model=EngagementResponse,
    responses=ERRORS,
)
async def predict_engagement(
    body: PredictRequest,
    registry: Registry,
    settings: AppSettings,
    prediction_log: PredictionLog,
    principal: CurrentPrincipal,
    explain: Annotated[
        bool,
        Query(
            description="Add each film's top input-field contributions to each output "
            "(SHAP for a tree model, occlusion otherwise; `explanation_methods` says which)"
        ),
    ] = False,
) -> Response:
    """Expected TMDB votes and rating, each with an 80% interval, for each film, in order;
    503 while no engagement model is active."""
    result = await engagement.predict_engagement(
        registry,
        body,
        settings.max_batch_size,
        prediction_log,
        LogContext(REQUEST_ID.get(), str(principal)),
        explain,
    )
    return _json(result)
