"""The catalogue filters as query parameters, shared by `/v1/analytics/*` and `/v1/movies`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from app.services.filters import MAX_GENRES, MAX_NAME_LENGTH, CatalogFilter


# `async` although it awaits nothing: FastAPI runs plain `def` dependencies in its thread
# pool, a hop that would cost more than the whole warm (cached) answer.
async def catalog_filter(
    genre: Annotated[
        list[str] | None,
        Query(
            description="Genre name (e.g. `Action`); repeat to match films having any of them",
            max_length=MAX_GENRES,
        ),
    ] = None,
    year_from: Annotated[
        int | None, Query(ge=1870, le=2100, description="Earliest release year (inclusive)")
    ] = None,
    year_to: Annotated[
        int | None, Query(ge=1870, le=2100, description="Latest release year (inclusive)")
    ] = None,
    language: Annotated[
        str | None,
        Query(min_length=2, max_length=12, description="Original language, ISO 639-1 (`en`)"),
    ] = None,
    company: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_NAME_LENGTH,
            description="Production company, exact name (e.g. `Pixar Animation Studios`)",
        ),
    ] = None,
    min_votes: Annotated[
        int | None, Query(ge=0, le=1_000_000_000, description="At least this many TMDB votes")
    ] = None,
) -> CatalogFilter:
    return CatalogFilter.build(genre, year_from, year_to, language, company, min_votes)


Filters = Annotated[CatalogFilter, Depends(catalog_filter)]
