"""`/v1/analytics/*`: aggregates over the catalogue, all narrowed by the same filters; each as
JSON or CSV, with an ETag and 304 to a matching `If-None-Match` (app.routers.answers)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query
from fastapi.responses import Response

from app.models.analytics import (
    CompaniesResponse,
    CorrelationsResponse,
    DistributionResponse,
    GenresResponse,
    GroupSort,
    LanguagesResponse,
    NumericField,
    PeopleResponse,
    SeasonalityResponse,
    SummaryResponse,
    TopMetric,
    TopResponse,
    TrendsResponse,
)
from app.models.segments import SegmentsResponse
from app.routers.answers import ANALYTICS_HEADERS, Answerer, read_responses
from app.routers.filters import Filters
from app.routers.json_body import json_router
from app.services import analytics
from app.services.analytics.segments import segments as segment_catalogue

router = json_router(prefix="/v1/analytics", tags=["analytics"])


RESPONSES = read_responses(ANALYTICS_HEADERS)
N = Annotated[int, Query(ge=1, le=500, description="How many entries")]
MinFilms = Annotated[int, Query(ge=1, le=100_000, description="Only groups with this many films")]
Sort = Annotated[
    GroupSort,
    Query(description="`films` (count), `revenue` (total known) or `vote_average` (mean)"),
]


@router.get(
    "/summary", summary="Catalogue summary", response_model=SummaryResponse, responses=RESPONSES
)
async def summary(answer: Answerer, filters: Filters) -> Response:
    """Film counts, how many films know each field, and totals of budget, revenue and profit."""
    return await answer(analytics.summary, filters)


@router.get(
    "/genres", summary="Genre economics", response_model=GenresResponse, responses=RESPONSES
)
async def genres(answer: Answerer, filters: Filters) -> Response:
    """Per genre: film count and stats of revenue, budget, profit, ROI, rating and runtime."""
    return await answer(analytics.genres, filters)


@router.get(
    "/trends", summary="Trends over time", response_model=TrendsResponse, responses=RESPONSES
)
async def trends(
    answer: Answerer,
    filters: Filters,
    by: Annotated[Literal["year", "month", "decade"], Query(description="Period")] = "year",
) -> Response:
    """Per release year, month (`YYYY-MM`) or decade: film count and the genre-style stats."""
    return await answer(analytics.trends, filters, by)


@router.get(
    "/seasonality",
    summary="Seasonality by release month",
    response_model=SeasonalityResponse,
    responses=RESPONSES,
)
async def seasonality(answer: Answerer, filters: Filters) -> Response:
    """Per calendar month of release (all years together): film count and stats."""
    return await answer(analytics.seasonality, filters)


@router.get("/top", summary="Top films", response_model=TopResponse, responses=RESPONSES)
async def top(
    answer: Answerer,
    filters: Filters,
    metric: Annotated[TopMetric, Query(description="Ranked field")] = "revenue",
    n: Annotated[int, Query(ge=1, le=100, description="How many films")] = 10,
    order: Annotated[Literal["desc", "asc"], Query(description="Highest or lowest")] = "desc",
) -> Response:
    """The n films with the highest (or lowest) known value of a metric."""
    return await answer(analytics.top, filters, metric, n, order)


@router.get(
    "/distribution",
    summary="Histogram of a field",
    response_model=DistributionResponse,
    responses=RESPONSES,
)
async def distribution(
    answer: Answerer,
    filters: Filters,
    field: Annotated[NumericField, Query(description="Numeric field")] = "revenue",
    bins: Annotated[int, Query(ge=1, le=200, description="Number of bins")] = 20,
    scale: Annotated[
        Literal["linear", "log"], Query(description="`log`: log-spaced bins over values > 0")
    ] = "linear",
) -> Response:
    """Histogram (bin edges and counts) of the known values of a field, with its stats."""
    return await answer(analytics.distribution, filters, field, bins, scale)


@router.get(
    "/correlations",
    summary="Correlation matrix",
    response_model=CorrelationsResponse,
    responses=RESPONSES,
)
async def correlations(
    answer: Answerer,
    filters: Filters,
    fields: Annotated[
        str | None,
        Query(
            max_length=300,
            description="Comma-separated numeric fields (default: budget, revenue, "
            "popularity, vote_average, vote_count, runtime)",
            examples=["budget,revenue,vote_average"],
        ),
    ] = None,
    method: Annotated[Literal["pearson", "spearman"], Query(description="Coefficient")] = (
        "pearson"
    ),
) -> Response:
    """Pairwise correlations over the films that know every requested field."""
    names = analytics.parse_fields(fields)
    return await answer(analytics.correlations, filters, names, method)


@router.get(
    "/people", summary="Directors and actors", response_model=PeopleResponse, responses=RESPONSES
)
async def people(
    answer: Answerer,
    filters: Filters,
    role: Annotated[Literal["director", "actor"], Query(description="Credit")] = "director",
    sort: Sort = "films",
    n: N = 20,
    min_films: MinFilms = 1,
) -> Response:
    """Top people by films, total revenue or mean rating, from credits and IMDB enrichment."""
    return await answer(analytics.people, filters, role, sort, n, min_films)


@router.get(
    "/companies",
    summary="Production companies",
    response_model=CompaniesResponse,
    responses=RESPONSES,
)
async def companies(
    answer: Answerer, filters: Filters, sort: Sort = "films", n: N = 20, min_films: MinFilms = 1
) -> Response:
    """Top production companies with film count and the genre-style stats."""
    return await answer(analytics.companies, filters, sort, n, min_films)


@router.get(
    "/languages",
    summary="Original languages",
    response_model=LanguagesResponse,
    responses=RESPONSES,
)
async def languages(
    answer: Answerer, filters: Filters, sort: Sort = "films", n: N = 100, min_films: MinFilms = 1
) -> Response:
    """Per original language: film count and the genre-style stats."""
    return await answer(analytics.languages, filters, sort, n, min_films)


@router.get(
    "/segments",
    summary="Segments of the catalogue (k-means)",
    response_model=SegmentsResponse,
    responses=RESPONSES,
)
async def segments(
    answer: Answerer,
    filters: Filters,
    k: Annotated[int, Query(ge=2, le=20, description="How many segments")] = 8,
) -> Response:
    """k-means clusters of the films on genres, keywords, people, era and scale, each described
    by its over-represented genres and keywords, dominant decades and budget/revenue medians."""
    return await answer(segment_catalogue, filters, k)
