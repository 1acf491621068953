"""`/v1/movies`: filterable, sortable, paginated film search, and one film by id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.deps import Db
from app.errors import problem_responses
from app.models.movies_api import MovieDetail, MovieList
from app.routers.filters import Filters
from app.services.movies_query import (
    DEFAULT_SORT,
    MAX_LIMIT,
    MAX_OFFSET,
    SORT_FIELDS,
    MovieQuery,
    get_movie,
    search_movies,
)

router = APIRouter(prefix="/v1/movies", tags=["movies"])
MAX_ID = 2**63 - 1  # BSON int64


@router.get(
    "",
    summary="Search films",
    response_model=MovieList,
    responses=problem_responses(400, 422, 503),
)
async def list_movies(
    db: Db,
    filters: Filters,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Title contains this text (case-, accent- and punctuation-insensitive)",
        ),
    ] = None,
    sort: Annotated[
        str,
        Query(
            max_length=40,
            description=f"One of {', '.join(sorted(SORT_FIELDS))}; `-` prefix for descending. "
            "Unknown values come first ascending, last descending.",
        ),
    ] = DEFAULT_SORT,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")] = 20,
    offset: Annotated[
        int, Query(ge=0, le=MAX_OFFSET, description="Films to skip (or page with `cursor`)")
    ] = 0,
    cursor: Annotated[
        str | None,
        Query(max_length=512, description="`next_cursor` of the previous page"),
    ] = None,
) -> MovieList:
    """Films matching the filters and title search, one page at a time, with the total."""
    query = MovieQuery(filters=filters, q=q, sort=sort, limit=limit, offset=offset, cursor=cursor)
    return await search_movies(db, query)


@router.get(
    "/{movie_id}",
    summary="One film",
    response_model=MovieDetail,
    responses=problem_responses(404, 422, 503),
)
async def movie(
    db: Db, movie_id: Annotated[int, Path(ge=1, le=MAX_ID, description="TMDB id")]
) -> MovieDetail:
    """Everything the catalogue holds about one film; 404 when the id is unknown."""
    return await get_movie(db, movie_id)
