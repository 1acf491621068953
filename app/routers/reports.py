"""`/v1/reports/*` and the model reports: HTML documents for people, self-contained (figures as
`data:` PNGs), sent with a content policy that allows nothing but those images and inline
styles."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Path
from fastapi.responses import HTMLResponse, Response

from app.deps import AppSettings, State
from app.errors import problem_responses
from app.http_cache import cache_headers, entity_tag, none_match, not_modified
from app.routers.json_body import json_router
from app.services.reports import model_report
from app.services.reports.eda import CONTENT_POLICY

router = json_router(prefix="/v1/reports", tags=["reports"])
# Included beside the model registry (same prefix, same role).
models_router = json_router(prefix="/v1/models", tags=["models"])

HTML_HEADERS = {
    "Content-Security-Policy": CONTENT_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_HTML_200: dict[str, Any] = {
    "content": {"text/html": {"schema": {"type": "string"}}},
    "description": "A self-contained HTML document",
}


@router.get(
    "/eda",
    summary="Data exploration report",
    response_class=HTMLResponse,
    responses={
        200: {
            **_HTML_200,
            "headers": {
                "X-Data-Version": {
                    "description": "Catalogue version the report describes",
                    "schema": {"type": "integer"},
                },
                "ETag": {
                    "description": "Changes with the data version",
                    "schema": {"type": "string"},
                },
            },
        },
        304: {"description": "Not Modified: the tag in `If-None-Match` is current"},
        **problem_responses(503),
    },
)
async def eda_report(
    state: State,
    if_none_match: Annotated[
        str | None, Header(alias="If-None-Match", max_length=2000, description="A held ETag")
    ] = None,
) -> Response:
    """Coverage, cleaning, distributions, trends, seasonality, correlations and outliers of
    the whole catalogue, with the numbers behind every figure; one per data version."""
    max_age = state.settings.http_cache_seconds
    version = (await state.analytics.snapshot()).version
    if none_match(if_none_match, _report_tag(version)):
        return not_modified(_report_headers(version, max_age))
    # The snapshot may move on while a build runs: the headers name the version built.
    built, body = await state.reports.current()
    return HTMLResponse(body, headers={**_report_headers(built, max_age), **HTML_HEADERS})


def _report_tag(version: int) -> str:
    # Weak: a rebuild of the same data version (another process) differs in its timestamp.
    return "W/" + entity_tag(version, "html", "eda-report")


def _report_headers(version: int, max_age: int) -> dict[str, str]:
    return {
        **cache_headers(_report_tag(version), max_age),
        "Vary": "Authorization, X-API-Key",
        "X-Data-Version": str(version),
    }


@models_router.get(
    "/{name}/versions/{version}/report",
    summary="Model evaluation report",
    response_class=HTMLResponse,
    responses={200: _HTML_200, **problem_responses(404)},
)
async def model_version_report(
    settings: AppSettings,
    name: Annotated[str, Path(max_length=40, description="Model name (`revenue`, `hit`)")],
    version: Annotated[str, Path(max_length=40, description="Version, e.g. `20250101T120000Z`")],
) -> HTMLResponse:
    """The evaluation report training wrote for this version (figures and metrics)."""
    body = await model_report(settings.artifacts_dir, name, version)
    return HTMLResponse(body, headers={**HTML_HEADERS, "Cache-Control": "private, max-age=3600"})
