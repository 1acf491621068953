"""`/v1/movies`: filterable, sortable, paginated film search, and one film by id."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Path, Query
from fastapi.responses import Response

from app.db import is_ferretdb
from app.deps import AppSettings, Db
from app.errors import problem_responses
from app.models.movies_api import MovieDetail, MovieList
from app.models.similar import SimilarResponse
from app.routers.answers import ANALYTICS_HEADERS, Answerer, read_responses
from app.routers.filters import Filters
from app.routers.json_body import json_router
from app.services.meta_repo import get_data_version
from app.services.movies_query import (
    DEFAULT_SORT,
    MAX_LIMIT,
    MAX_OFFSET,
    SORT_FIELDS,
    MovieQuery,
    get_movie,
    prepare,
    search_movies,
)
from app.services.movies_snapshot import search_snapshot
from app.services.similar import MAX_N, similar_films

router = json_router(prefix="/v1/movies", tags=["movies"])
MAX_ID = 2**63 - 1  # BSON int64

_SEARCH_HEADERS = {
    "X-Search-Backend": {
        "description": "`database`, or `snapshot` when answered from the in-memory catalogue "
        "snapshot (the default on FerretDB)",
        "schema": {"type": "string"},
    },
    "X-Data-Version": {
        "description": "Catalogue version of the answer (a snapshot answer trails a write by "
        "the seconds a rebuild takes)",
        "schema": {"type": "integer"},
    },
    "X-Analytics-Cache": {
        "description": "Snapshot answers: `hit` when served from the result cache, else `miss`",
        "schema": {"type": "string"},
    },
    "X-Data-Stale": {
        "description": "`true` while the database is unreachable and a snapshot answer comes "
        "from the last snapshot taken",
        "schema": {"type": "string"},
    },
}


@router.get(
    "",
    summary="Search films",
    response_model=MovieList,
    responses=read_responses(_SEARCH_HEADERS),
)
async def list_movies(
    answer: Answerer,
    db: Db,
    settings: AppSettings,
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
            "Unknown values come first ascending, last descending; ties by id.",
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
) -> Response:
    """Films matching the filters and title search, one page at a time, with the total;
    as JSON or CSV (one row per film of the page)."""
    search = prepare(
        MovieQuery(filters=filters, q=q, sort=sort, limit=limit, offset=offset, cursor=cursor),
        settings.cursor_keys,
    )
    # Next-page cursors are signed: an answer's bytes depend on the signing key too.
    salt = hashlib.sha256(search.cursor_key).hexdigest()[:16]
    backend = settings.movie_search
    if backend == "auto":
        backend = "snapshot" if await is_ferretdb(db) else "database"
    if backend == "snapshot":
        response = await answer(
            search_snapshot, search, salt=salt, extra_headers={"X-Search-Backend": backend}
        )
    else:
        version = await get_data_version(db)
        key = ("search_movies", search, salt)
        response = await answer.from_database(version, key, lambda: search_movies(db, search))
    response.headers["X-Search-Backend"] = backend
    return response


@router.get(
    "/{movie_id}",
    summary="One film",
    response_model=MovieDetail,
    responses=problem_responses(404, 422, 503),
)
async def movie(
    db: Db, movie_id: Annotated[int, Path(ge=1, le=MAX_ID, description="TMDB id")]
) -> Response:
    """Everything the catalogue holds about one film; 404 when the id is unknown."""
    detail = await get_movie(db, movie_id)
    # Validated once by `get_movie` and written by pydantic-core: FastAPI's response model
    # would validate it again and encode it in Python (~0.25 ms, a tenth of the request).
    return Response(detail.model_dump_json(by_alias=True), media_type="application/json")


@router.get(
    "/{movie_id}/similar",
    summary="Similar films",
    response_model=SimilarResponse,
    responses={**read_responses(ANALYTICS_HEADERS), **problem_responses(404)},
)
async def similar(
    answer: Answerer,
    movie_id: Annotated[int, Path(ge=1, le=MAX_ID, description="TMDB id")],
    n: Annotated[int, Query(ge=1, le=MAX_N, description="How many films")] = 10,
) -> Response:
    """The films nearest this one on genres, keywords, people, era and scale (cosine
    similarity), from the catalogue snapshot; 404 when the id is unknown."""
    return await answer(similar_films, movie_id, n)
