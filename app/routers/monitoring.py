"""Model monitoring: drift and live accuracy per model (viewer), the page showing both (viewer),
and the outcomes partners report (predictor)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path, Query
from fastapi.responses import HTMLResponse

from app.deps import State
from app.errors import problem_responses
from app.models.monitoring import DriftReport, OutcomesRequest, OutcomesResult, PerformanceReport
from app.routers.json_body import json_router
from app.security import CurrentPrincipal
from app.services import monitoring as service
from app.services.monitoring_page import render_page

router = json_router(prefix="/v1/models", tags=["monitoring"])
# Included with the predictor role by the app factory.
outcomes_router = json_router(prefix="/v1/predictions", tags=["monitoring"])

ModelName = Annotated[
    str, Path(max_length=40, description="Model name (`revenue`, `hit`, `engagement`)")
]
Since = Annotated[
    datetime | None,
    Query(description="Start of the window (ISO 8601; UTC when no offset is given)"),
]
Until = Annotated[datetime | None, Query(description="End of the window, exclusive (default: now)")]


@router.get(
    "/{name}/drift",
    summary="Input and output drift of the serving version",
    response_model=DriftReport,
    responses=problem_responses(400, 404, 500, 503),
)
async def drift(
    name: ModelName, state: State, since: Since = None, until: Until = None
) -> DriftReport:
    """Per monitored input and for the output: PSI and a two-sample test of the logged
    predictions against the training films, and a status (default window: the last
    `DRIFT_WINDOW_DAYS`)."""
    return await service.model_drift(
        state.db, state.registry, state.drift, state.settings, name, since, until
    )


@router.get(
    "/{name}/performance",
    summary="Live accuracy",
    response_model=PerformanceReport,
    responses=problem_responses(400, 404, 500, 503),
)
async def performance(
    name: ModelName, state: State, since: Since = None, until: Until = None
) -> PerformanceReport:
    """Accuracy of the logged predictions whose actual revenue is known, overall, per version
    (beside its test figures) and per month (default: everything the log holds)."""
    return await service.model_performance(state.db, state.settings, name, since, until)


@router.get(
    "/{name}/monitoring",
    summary="Monitoring page",
    response_class=HTMLResponse,
    responses={
        200: {
            "content": {"text/html": {"schema": {"type": "string"}}},
            "description": "A self-contained HTML page",
        },
        **problem_responses(404, 500, 503),
    },
)
async def monitoring_page(name: ModelName, state: State) -> HTMLResponse:
    """Drift per feature and live accuracy per version and month, for people."""
    return await render_page(state.db, state.registry, state.drift, state.settings, name)


@outcomes_router.post(
    "/outcomes",
    summary="Report actual outcomes (revenue, votes, rating)",
    response_model=OutcomesResult,
    responses=problem_responses(413, 422, 500, 503),
)
async def report_outcomes(
    body: OutcomesRequest, state: State, principal: CurrentPrincipal
) -> OutcomesResult:
    """What films by TMDB id actually did: worldwide revenue (USD; `revenue` and `hit`), and
    the TMDB votes and rating they reached (`engagement`); each item gives at least one.
    Joined to their logged predictions for live accuracy. Posting a figure of a film again
    replaces that figure and keeps the others."""
    figures: dict[int, dict[str, float]] = {}
    for item in body.items:  # the last figure of an id wins
        figures.setdefault(item.id, {}).update(item.figures())
    return await service.record_outcomes(state.db, figures, str(principal))
